"""Export a sentence-transformers model's transformer to ONNX for the serving path.

sentence-transformers stays the reference that defines the model: this module loads it, checks that
it is a plain transformer + mean pooling + normalisation pipeline, and writes to one folder:

* ``model.onnx``: the transformer (token ids in, last hidden state out), via ``torch.onnx.export``;
* ``tokenizer.json``: the fast tokenizer, run at serving time by the ``tokenizers`` library;
* ``embedder.json``: what the serving side needs to reproduce the pipeline (max length, dimension,
  the inputs the transformer takes, the padding id).

``python -m retrieval.onnx_export --int8 FOLDER`` adds ``model.int8.onnx``: the export with its
weights quantized to int8 by onnxruntime's dynamic quantization (no torch needed for that step).

Only this module imports torch. It runs in a child process (``python -m retrieval.onnx_export MODEL
FOLDER``, started by :func:`retrieval.embedder.ensure_onnx`) so that the process that goes on to
serve never loads torch.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

from retrieval.embedder import INT8_FILE, MANIFEST, ONNX_FILE, ONNX_INPUTS, TOKENIZER_FILE
from retrieval.models import resolve_model_path

OPSET = 17


def export(model: str, folder: Path) -> Path:
    """Write the ONNX export of ``model`` to ``folder`` (atomically: a complete folder or none)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    source = resolve_model_path(model, folder.parent)  # a split model is assembled beside its export
    reference = SentenceTransformer(source, device="cpu")
    transformer = _check_pipeline(reference)
    hf_model = transformer.auto_model.eval()
    if hasattr(hf_model, "set_attn_implementation"):  # a plainly traceable attention, same numbers
        hf_model.set_attn_implementation("eager")

    accepted = inspect.signature(hf_model.forward).parameters
    inputs = [name for name in ONNX_INPUTS if name in accepted]  # MPNet has no token_type_ids

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = hf_model

        def forward(self, *tensors):
            return self.inner(**dict(zip(inputs, tensors, strict=True))).last_hidden_state

    tokenizer = reference.tokenizer
    sample = tokenizer(["an example", "a slightly longer example sentence"], padding=True,
                       return_token_type_ids=True, return_tensors="pt")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    staging.chmod(0o755)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(LastHiddenState(), tuple(sample[name] for name in inputs), str(staging / ONNX_FILE),
                              input_names=inputs, output_names=["last_hidden_state"],
                              dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*inputs, "last_hidden_state"]},
                              opset_version=OPSET, dynamo=False)
        tokenizer.backend_tokenizer.save(str(staging / TOKENIZER_FILE))
        manifest = {"model": model, "source": source, "max_seq_length": int(reference.max_seq_length),
                    "dimension": _dimension(reference), "pooling": "mean",
                    "normalize": True, "inputs": inputs, "pad_token_id": int(tokenizer.pad_token_id or 0),
                    "opset": OPSET, "torch": torch.__version__}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if folder.exists():  # another process finished first: keep its export
            shutil.rmtree(staging)
        else:
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def quantize(folder: Path) -> Path:
    """Write ``model.int8.onnx`` beside ``model.onnx``: int8 weights, dynamic activation quantization.

    Per-channel weights with a reduced range: on CPUs without VNNI (AVX2 only) plain int8 weights
    saturate the u8 x s8 products (all-mpnet-base-v2's vectors fell to cosine 0.05 of fp32 per channel,
    0.70 per tensor); this choice measured best (0.87) and still does not hold quality for mpnet, so
    int8 is a setting, off by default (docs/experiments/mpnet.md). Written to a temporary file and
    renamed, so a reader sees the whole file or none.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = folder / INT8_FILE
    if target.is_file():
        return target
    staging = Path(tempfile.mkdtemp(prefix=".int8-", dir=folder))
    try:
        quantize_dynamic(str(folder / ONNX_FILE), str(staging / INT8_FILE), weight_type=QuantType.QInt8,
                         per_channel=True, reduce_range=True)
        os.replace(staging / INT8_FILE, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_pipeline(reference):  # sentence-transformers modules
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
        sys.exit("usage: python -m retrieval.onnx_export MODEL FOLDER | --int8 FOLDER")
    if sys.argv[1] == "--int8":
        print(quantize(Path(sys.argv[2])))
    else:
        print(export(sys.argv[1], Path(sys.argv[2])))
