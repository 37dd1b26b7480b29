"""Export a sentence-transformers model's transformer to ONNX for the serving path.

sentence-transformers stays the reference that defines the model: this module loads it, checks that
it is a plain transformer + mean pooling + normalisation pipeline, and writes to one folder:

* ``model.onnx``: the transformer (token ids in, last hidden state out), via ``torch.onnx.export``;
* ``tokenizer.json``: the fast tokenizer, run at serving time by the ``tokenizers`` library;
* ``embedder.json``: what the serving side needs to reproduce the pipeline (max length, dimension).

Only this module imports torch. It runs in a child process (``python -m retrieval.onnx_export MODEL
FOLDER``, started by :func:`retrieval.embedder.ensure_onnx`) so that the process that goes on to
serve never loads torch.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

from retrieval.embedder import MANIFEST, ONNX_FILE, TOKENIZER_FILE, resolve_model_path

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
OPSET = 17


def export(model: str, folder: Path) -> Path:
    """Write the ONNX export of ``model`` to ``folder`` (atomically: a complete folder or none)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    source = resolve_model_path(model)
    reference = SentenceTransformer(source, device="cpu")
    transformer = _check_pipeline(reference)
    hf_model = transformer.auto_model.eval()
    if hasattr(hf_model, "set_attn_implementation"):  # a plainly traceable attention, same numbers
        hf_model.set_attn_implementation("eager")

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = hf_model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    tokenizer = reference.tokenizer
    sample = tokenizer(["an example", "a slightly longer example sentence"], padding=True,
                                   return_tensors="pt")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    staging.chmod(0o755)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(LastHiddenState(), tuple(sample[name] for name in INPUTS), str(staging / ONNX_FILE),
                              input_names=INPUTS, output_names=["last_hidden_state"],
                              dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*INPUTS, "last_hidden_state"]},
                              opset_version=OPSET, dynamo=False)
        tokenizer.backend_tokenizer.save(str(staging / TOKENIZER_FILE))
        manifest = {"model": model, "source": source, "max_seq_length": int(reference.max_seq_length),
                    "dimension": _dimension(reference), "pooling": "mean",
                    "normalize": True, "opset": OPSET, "torch": torch.__version__}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if folder.exists():  # another process finished first: keep its export
            shutil.rmtree(staging)
        else:
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _check_pipeline(reference):
    """The transformer module, when the pipeline is one the serving side reproduces."""
    modules = list(reference)
    kinds = [type(m).__name__ for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        raise ValueError(f"only Transformer + Pooling (+ Normalize) pipelines can be exported, got {kinds}")
    pooling = modules[1]
    mode = getattr(pooling, "pooling_mode", None) or pooling.get_pooling_mode_str()  # 6.x, then 5.x
    if mode != "mean":
        raise ValueError(f"only mean pooling can be exported, got {mode!r}")
    return modules[0]


def _dimension(reference) -> int:
    getter = getattr(reference, "get_embedding_dimension", None) or reference.get_sentence_embedding_dimension
    return int(getter())


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m retrieval.onnx_export MODEL FOLDER")
    print(export(sys.argv[1], Path(sys.argv[2])))
