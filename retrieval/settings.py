"""One settings object, built at the edge (CLI entry, create_app) and passed down.

Environment variables are prefixed ``PERSONA_`` (``PERSONA_DATA_DIR``, ``PERSONA_CHROMA_URL`` ...);
an optional YAML file named by ``PERSONA_CONFIG`` supplies defaults that the environment overrides.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

DEFAULT_MODEL = "all-MiniLM-L6-v2"

# The coverage thresholds `persona eval` derived on the dev sets for each packaged model (the field
# defaults are all-MiniLM-L6-v2's); a model named here gets its own unless they are set explicitly.
DERIVED_THRESHOLDS: dict[str, dict[str, float]] = {
    "all-MiniLM-L6-v2": {"min_score": 0.368, "boundary_margin": 0.035, "confident_score": 0.439},
    "all-mpnet-base-v2": {"min_score": 0.376, "boundary_margin": 0.13, "confident_score": 0.47},
    "nomic-embed-text-v1.5": {"min_score": 0.612, "boundary_margin": 0.03, "confident_score": 0.682},
}


class Settings(BaseSettings):
    """Every knob of the service, with the defaults a fresh checkout runs on."""

    model_config = SettingsConfigDict(env_prefix="PERSONA_", extra="ignore")

    data_dir: Path = Field(Path("./.persona"), description="Where the embedded Chroma index lives.")
    chroma_url: str | None = Field(None, description="http://host:port of a Chroma server; overrides data_dir.")
    model: str = Field(
        DEFAULT_MODEL,
        description="sentence-transformers model name or path; packaged offline: all-MiniLM-L6-v2, all-mpnet-base-v2, "
                    "nomic-embed-text-v1.5 (llama.cpp).",
    )
    seeds_dir: Path | None = Field(
        None, description="Cards `persona serve` and `persona ingest` take when none are named; unset: ./seeds when "
                          "it exists, else the built-in Sales Manager example (ingest.cards.default_cards).",
    )
    default_k: int = Field(5, ge=1, le=50, description="Passages retrieved per question.")
    # min_score, boundary_margin and confident_score are derived, not guessed: `persona eval` prints
    # "coverage thresholds derived from sales-manager-chat-dev, sales-manager-dev" (eval/calibration.py,
    # derive_coverage: refuse every dev off-topic question with the fewest dev in-scope refusals).
    # Re-derive them when retrieval scoring, the model or a card's sidecar changes.
    min_score: float = Field(
        0.368, ge=0.0, le=1.0,
        description="Coverage evidence (the best hit's score, or the pipeline's support: retrieval/stages/examples.py) "
                    "below which a question counts as not covered.",
    )
    boundary_margin: float = Field(
        0.035, ge=-1.0, le=1.0,
        description="Refuse when the question's closest boundary question (one the card does not cover, from its "
                    "sidecar) scores more than its best passage plus this margin.",
    )
    confident_score: float = Field(
        0.439, ge=0.0, le=1.0,
        description="Best-hit score from which an answer is 'high' confidence; between min_score and this it is "
                    "'low', framed as the closest guidance.",
    )
    thresholds: Literal["card", "settings"] = Field(
        "card", description="Whose coverage thresholds judge a card: its own, recorded at ingest (card), or "
                            "min_score, boundary_margin and confident_score above for every card (settings).")
    api_key: str | None = Field(None, description="When set, required on every route but /healthz.")
    llm_base_url: str | None = Field(None, description="Base URL of an OpenAI-compatible server for the LLM generator.")
    llm_model: str | None = Field(None, description="Model name sent to the OpenAI-compatible server.")
    llm_api_key: str | None = Field(None, description="API key for the OpenAI-compatible server.")
    llm_timeout: float = Field(30.0, gt=0, le=600, description="Seconds the whole LLM answer may take.")
    llm_max_tokens: int = Field(512, ge=1, le=32768, description="Most tokens the LLM may generate per answer.")
    llm_temperature: float = Field(0.2, ge=0.0, le=2.0, description="Sampling temperature sent to the LLM.")
    llm_condense: bool = Field(
        True, description="With an LLM configured, rewrite a follow-up as a standalone question before searching "
                          "(off: the offline rewrite, as without an LLM).")
    llm_condense_timeout: float = Field(
        10.0, gt=0, le=600, description="Seconds the LLM may take to rewrite a follow-up; past them the offline "
                                        "rewrite is searched.")
    llm_extra_body: dict[str, Any] = Field(
        default_factory=dict, description="Extra JSON fields sent with every LLM request (server-specific options)."
    )
    chat_generator: str | None = Field(
        None, max_length=40,
        description="Generator behind /v1/chat/completions (a name of generation.registry; default: the first).",
    )
    chat_housekeeping: bool = Field(
        True,
        description="Answer a chat tool's title / follow-up / tags prompts (recognised by their shape) from the "
                    "card; off: they are answered as questions.",
    )
    chat_sources: Literal["auto", "text", "events"] = Field(
        "auto",
        description="How a chat stream gives its sources: text (a 'Sources' list after the answer, and citation "
                    "events), events (citation events only), auto (events only for Open WebUI).",
    )
    retrieval: str | None = Field(
        None, max_length=40,
        description="Retrieval preset (a name of retrieval.pipeline.PRESETS; default: the first, 'hybrid').",
    )
    mcp_allowed_hosts: list[str] = Field(
        default_factory=list, description="Host headers /mcp accepts besides localhost ('name:*' any port, '*' any)."
    )
    embed_batch_size: int = Field(64, ge=1, le=4096, description="Texts per embedding batch at ingest.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API (comma-separated in the environment); none by default.",
    )
    rate_limit: str | None = Field(
        "600/minute",
        description="Requests per user (a user header below) or else per client address, e.g. '600/minute' or "
                    "'10/second;500/hour'; empty = off.",
    )
    rate_limit_user_headers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["X-OpenWebUI-User-Id", "X-User-Id"],
        description="Headers naming the end user a chat tool speaks for (comma-separated in the environment); the "
                    "first present gives the request a budget of its own. With PERSONA_API_KEY set, only requests "
                    "carrying the key are trusted with it. Empty: one budget per client address.",
    )
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="Largest request body accepted (413 above).")
    max_ingest_bytes: int = Field(
        64 * 1024 * 1024, ge=1024,
        description="Largest body of a live ingest (POST /v1/ingest: the cards and their sidecars as JSON), accepted "
                    "only from a client allowed to ingest (the API key, or this machine without one); 413 above.",
    )
    log_json: bool = Field(True, description="Structured JSON log lines with a request id (off: plain text).")
    models_root: Path | None = Field(
        None, validation_alias=AliasChoices("models_root", "PERSONA_MODELS_DIR"),
        description="Where ONNX exports (and models assembled from split packages) live; unset: <data_dir>/models. "
                    "Point several indexes at one folder to export each model once.",
    )
    embedder: Literal["auto", "onnx", "sentence-transformers"] = Field(
        "auto", description="auto: the ONNX export under <data_dir>/models when present, else sentence-transformers."
    )
    embed_precision: Literal["fp32", "int8"] = Field(
        "fp32", description="ONNX weights: fp32, or int8 (dynamic quantization; see docs/experiments/mpnet.md)."
    )
    embed_threads: int | None = Field(None, ge=1, le=256, description="onnxruntime threads (default: the cores).")
    compute_slots: int | None = Field(
        None, ge=1, le=256,
        description="Requests that search at once; the rest wait their turn (default: 2 x cores).",
    )
    keep_alive_seconds: float = Field(
        75.0, gt=0, le=3600,
        description="How long an idle HTTP keep-alive connection stays open (above a proxy's idle timeout).",
    )

    @model_validator(mode="before")
    @classmethod
    def _thresholds_of_the_model(cls, data: Any) -> Any:
        if isinstance(data, dict):
            model = str(data.get("model") or DEFAULT_MODEL).rstrip("/").rsplit("/", 1)[-1]
            for name, value in DERIVED_THRESHOLDS.get(model, {}).items():
                data.setdefault(name, value)
        return data

    @field_validator("cors_origins", "rate_limit_user_headers", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("rate_limit")
    @classmethod
    def _check_rate_limit(cls, value: str | None) -> str | None:
        if value is None or not value.strip() or value.strip().lower() in {"off", "none", "0"}:
            return None
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"expected a rate like '120/minute', got {value!r}") from exc
        return value.strip()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("PERSONA_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    @property
    def models_dir(self) -> Path:
        """Where model exports (ONNX) live, and (under ``.packaged/``) models assembled from split packages."""
        return self.models_root or self.data_dir / "models"
