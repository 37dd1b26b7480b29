"""One settings object, built at the edge (CLI entry, create_app) and passed down.

Environment variables are prefixed ``PERSONA_`` (``PERSONA_DATA_DIR``, ``PERSONA_CHROMA_URL`` ...);
an optional YAML file named by ``PERSONA_CONFIG`` supplies defaults that the environment overrides.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

DEFAULT_MODEL = "all-MiniLM-L6-v2"


class Settings(BaseSettings):
    """Every knob of the service, with the defaults a fresh checkout runs on."""

    model_config = SettingsConfigDict(env_prefix="PERSONA_", extra="ignore")

    data_dir: Path = Field(Path("./.persona"), description="Where the embedded Chroma index lives.")
    chroma_url: str | None = Field(None, description="http://host:port of a Chroma server; overrides data_dir.")
    model: str = Field(DEFAULT_MODEL, description="sentence-transformers model name or path.")
    seeds_dir: Path = Field(Path("./seeds"), description="Cards ingested by `make serve` on first start.")
    default_k: int = Field(5, ge=1, le=50, description="Passages retrieved per question.")
    min_score: float = Field(
        0.42, ge=0.0, le=1.0, description="Best-hit score below which a question counts as not covered."
    )
    api_key: str | None = Field(None, description="When set, required on every route but /healthz.")
    llm_base_url: str | None = Field(None, description="OpenAI-compatible base URL for the 'openai' generator.")
    llm_model: str | None = Field(None, description="Model name sent to the OpenAI-compatible server.")
    llm_api_key: str | None = Field(None, description="API key for the OpenAI-compatible server.")
    embed_batch_size: int = Field(64, ge=1, le=4096, description="Texts per embedding batch at ingest.")
    embedder: Literal["auto", "onnx", "sentence-transformers"] = Field(
        "auto", description="auto: the ONNX export under <data_dir>/models when present, else sentence-transformers."
    )
    embed_threads: int | None = Field(None, ge=1, le=256, description="onnxruntime threads (default: the cores).")

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
        """Where model exports (ONNX) live."""
        return self.data_dir / "models"

    def public(self) -> dict[str, Any]:
        """Settings safe to show (no secrets)."""
        hidden = {"api_key", "llm_api_key"}
        return {k: (None if k in hidden and v else v) for k, v in self.model_dump(mode="json").items()}
