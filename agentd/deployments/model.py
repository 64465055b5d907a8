"""What a deployment is: its record, its statuses, the errors asking for one can meet, keep_alive parsing."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["pending", "loading", "ready", "failed", "stopped"]
EngineName = Literal["embedded", "vllm"]

LIVE: tuple[Status, ...] = ("pending", "loading", "ready")
TERMINAL: tuple[Status, ...] = ("ready", "failed", "stopped")
ENGINES = ("auto", "embedded", "vllm")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class DeploymentError(Exception):
    """A request about deployments that cannot be served; the router answers it with `status`."""

    def __init__(self, message: str, status: int = 400, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.status, self.param, self.code = message, status, param, code


@dataclass
class Deployment:
    """One served model (and its adapters) on one engine, as recorded in SQLite."""

    id: str
    model: str
    served_id: str
    engine: EngineName
    status: Status
    adapters: dict[str, str]
    options: dict[str, Any]
    keep_alive_s: float | None
    created_at: int
    updated_at: int
    last_used_at: float | None = None
    error: str | None = None
    memory_bytes: int | None = None
    pid: int | None = None
    url: str | None = None
    restarts: int = 0
    # How to load it again after a restart without resolving `model` anew: kind, location, adapter.
    source: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def model_ids(self) -> list[str]:
        """Every id it serves: its own, then its adapters'."""
        return [self.served_id, *self.adapters]

    def expires_at(self) -> float | None:
        """When it is unloaded if nothing uses it before; counted from the last use or the last change."""
        if self.keep_alive_s is None or self.status not in LIVE:
            return None
        return max(self.last_used_at or 0.0, float(self.updated_at)) + self.keep_alive_s

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id, "object": "deployment", "model": self.model, "served_model": self.served_id,
            "engine": self.engine, "status": self.status,
            "adapters": [{"id": adapter_id, "path": path} for adapter_id, path in self.adapters.items()],
            "dtype": self.options.get("dtype"), "max_model_len": self.options.get("max_model_len"),
            "engine_args": self.options.get("engine_args") or {}, "keep_alive": self.keep_alive_s,
            "created_at": self.created_at, "updated_at": self.updated_at, "last_used_at": self.last_used_at,
            "expires_at": self.expires_at(), "error": self.error, "memory_bytes": self.memory_bytes,
            "pid": self.pid, "url": self.url, "restarts": self.restarts,
        }


def parse_keep_alive(value: float | int | str | None) -> float | None:
    """Seconds a deployment may sit idle: a number of seconds or "90s", "5m", "1h", "250ms".

    None (and, as in Ollama, a negative number) keeps it until it is undeployed.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise _bad_keep_alive(value)
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            if str(value).strip().startswith("-"):
                return None
            raise _bad_keep_alive(value)
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if math.isnan(seconds) or math.isinf(seconds) or seconds == 0:
        raise _bad_keep_alive(value)
    return None if seconds < 0 else seconds


def _bad_keep_alive(value: object) -> DeploymentError:
    return DeploymentError(f"keep_alive {value!r} is not a duration: give seconds (300), a string like "
                           "\"30s\", \"5m\" or \"1h\", or null to keep the deployment until it is undeployed",
                           param="keep_alive", code="invalid_value")
