"""One registry from everything a server is told to offer: built-ins, files, packages, remotes."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tools.files import FileStore
from tools.registry import ToolLoadError, ToolRegistry


def build_registry(data_dir: Path, *, tool_files: Iterable[str | Path] = (), remote_urls: Iterable[str] = (),
                   mcp_targets: Iterable[str] = (), builtins: bool = True, entry_points: bool = True,
                   remote_api_key: str | None = None, allow_local_paths: bool = False,
                   image_pipeline: Path | None = None) -> ToolRegistry:
    """Raises ToolLoadError naming the file, package or server that failed."""
    from pipelines.embeddings import LazyEmbedder
    from tools.builtin import builtin_tools
    from tools.mcp_client import MCPToolkit
    from tools.remote import RemoteToolkit

    registry = ToolRegistry(file_store=FileStore(Path(data_dir) / "files"), allow_local_paths=allow_local_paths)
    try:
        if builtins:
            registry.add(builtin_tools(data_dir, embedder=LazyEmbedder.embedded(), image_pipeline=image_pipeline))
        if entry_points:
            registry.load_entry_points()
        for file in tool_files:
            registry.load_file(file)
        for url in remote_urls:
            registry.add(RemoteToolkit.from_url(url, api_key=remote_api_key))
        for target in mcp_targets:
            registry.add(MCPToolkit(target))
    except ToolLoadError:
        registry.close()
        raise
    return registry
