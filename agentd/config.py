"""Server configuration: flags override `AGENTD_*` environment variables override defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTD_")

    host: str = "127.0.0.1"
    port: int = 8000
    # `embedded`, a model folder (`ID=PATH`), or an OpenAI-compatible upstream (`ID=URL#model`).
    models: CommaList = Field(default_factory=lambda: ["embedded"])
    api_keys: CommaList = Field(default_factory=list)
    cors_origins: CommaList = Field(default_factory=list)
    data_dir: Path = Path.home() / ".cache" / "agentd"
    dtype: str = "auto"
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
    agent_time_limit_s: float = 300.0
    # Fine-tuning and other jobs: how many run at once (the rest queue), and the upload limit.
    max_concurrent_jobs: int = 1
    max_upload_mb: int = 512

    @field_validator("models", "api_keys", "cors_origins", "tools", "remote_tools", "mcp_servers", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
