"""`RemoteToolkit`: the tools of another agentd tool server, called over HTTP as if local."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from tools.base import DEFAULT_TIMEOUT_S, Tool, ToolArgumentError, ToolError
from tools.context import ToolContext
from tools.decorator import Toolkit
from tools.media import File, Image
from tools.registry import ToolLoadError
from tools.results import ArtifactPart, JsonPart, TextPart, ToolResult, artifact_part
from tools.validation import check_against_schema


class RemoteTool(Tool):
    def __init__(self, info: dict[str, Any], toolkit: RemoteToolkit):
        self.name = toolkit.prefix + info["name"]
        self.remote_name = info["name"]
        self.description = info.get("description") or ""
        self.parameters = info.get("parameters") or {"type": "object", "properties": {}}
        self.output_schema = info.get("output_schema")
        self.timeout = info.get("timeout")
        self.requires_approval = bool(info.get("requires_approval"))
        self.long_running = bool(info.get("long_running"))
        self.source = toolkit.url
        self._toolkit = toolkit

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        return check_against_schema(self.parameters, arguments)

    async def _run(self, validated: dict[str, Any], context: ToolContext) -> ToolResult:
        limit = (self.timeout or DEFAULT_TIMEOUT_S) + 10
        try:
            async with httpx.AsyncClient(timeout=limit, headers=self._toolkit.headers) as client:
                response = await client.post(f"{self._toolkit.url}/{self.remote_name}", json=validated,
                                             headers={"x-tool-call-id": context.call_id or ""})
        except httpx.HTTPError as error:
            raise ToolError(f"the tool server at {self._toolkit.url} is unreachable ({error})",
                            kind="remote_error") from None
        if response.status_code == 400:
            raise ToolArgumentError(_error_message(response))
        if response.status_code != 200:
            raise ToolError(f"the tool server answered {response.status_code}: {_error_message(response)}",
                            kind="remote_error")
        result = ToolResult.from_dict(response.json())
        if result.error is not None:
            raise ToolError(result.error.message, kind=result.error.kind, **result.error.details)
        return ToolResult(self.name, content=tuple(_localise(part, context) for part in result.content))


def _localise(part: TextPart | JsonPart | ArtifactPart, context: ToolContext):
    """Keep a remote artifact in this server's store, so agents can pass its id on."""
    if isinstance(part, ArtifactPart) and part.data is not None:
        cls = Image if part.kind == "image" else File
        return artifact_part(cls(part.data, part.mime_type, part.filename), context)
    return part


def _error_message(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:500]


class RemoteToolkit(Toolkit):
    """Example: `registry.add(RemoteToolkit.from_url("http://10.0.0.5:8100/tools"))`."""

    def __init__(self, url: str, infos: list[dict[str, Any]], *, api_key: str | None = None, prefix: str = ""):
        self.url = url.rstrip("/")
        self.prefix = prefix
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._tools = [RemoteTool(info, self) for info in infos]

    @classmethod
    def from_url(cls, url: str, *, api_key: str | None = None, prefix: str = "", timeout: float = 30) -> RemoteToolkit:
        """Read the tool listing at `url` (a tool server's `/tools`, or agentd's `/v1/tools`)."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            response = httpx.get(url.rstrip("/"), headers=headers, timeout=timeout)
            response.raise_for_status()
            infos = response.json()["data"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
            raise ToolLoadError(f"cannot read the tool listing at {url}: {error}") from None
        return cls(url, infos, api_key=api_key, prefix=prefix)

    def tools(self) -> list[Tool]:
        return list(self._tools)

