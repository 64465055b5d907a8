"""`ToolRegistry`: the tools a server offers, from decorators, user files, packages and remotes."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from tools.base import Tool
from tools.context import ToolContext
from tools.decorator import FunctionTool, Toolkit, tool
from tools.files import FileStore
from tools.results import ToolFailure, ToolResult

ENTRY_POINT_GROUP = "agentd.tools"


class ToolLoadError(ValueError):
    """A tools file, package or remote server could not be loaded; the message says which and why."""


class ToolRegistry:
    """Name → tool, plus the context every invocation gets (file store, path policy)."""

    def __init__(self, tools: Iterable[Any] = (), *, file_store: FileStore | None = None,
                 allow_local_paths: bool = False):
        self._tools: dict[str, Tool] = {}
        self._toolkits: list[Toolkit] = []
        self.context = ToolContext(file_store=file_store, allow_local_paths=allow_local_paths)
        for item in tools:
            self.add(item)

    # -- contents ---------------------------------------------------------------------------
    def add(self, item: Any, *, replace: bool = False) -> list[Tool]:
        """Add a Tool, a plain documented function, a Toolkit instance, or a list of those."""
        if isinstance(item, Toolkit):
            self._toolkits.append(item)
            return [added for member in item.tools() for added in self.add(member, replace=replace)]
        if isinstance(item, (list, tuple)):
            return [added for member in item for added in self.add(member, replace=replace)]
        if not isinstance(item, Tool):
            if not callable(item):
                raise TypeError(f"cannot add {item!r} as a tool")
            item = tool(item)
        if item.name in self._tools and not replace and self._tools[item.name] is not item:
            raise ToolLoadError(f"two tools are named {item.name!r} ({self._tools[item.name].source} and "
                                f"{item.source}); rename one")
        self._tools[item.name] = item
        return [item]

    def remove(self, name: str) -> None:
        self._tools.pop(name, None)

    def remove_toolkit(self, toolkit: Toolkit) -> None:
        """Take a toolkit's tools out and forget it (its owner closes it)."""
        for member in toolkit.tools():
            self._tools.pop(member.name, None)
        self._toolkits = [kept for kept in self._toolkits if kept is not toolkit]

    def get(self, name: str) -> Tool:
        return self._tools[name]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(sorted(self._tools.values(), key=lambda t: t.name))

    def __len__(self) -> int:
        return len(self._tools)

    @property
    def names(self) -> list[str]:
        return sorted(self._tools)

    def definitions(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """OpenAI `tools` entries, for a chat model choosing among them."""
        wanted = self.names if names is None else list(names)
        return [self._tools[name].definition() for name in wanted]

    def close(self) -> None:
        """Close toolkits that hold connections (MCP sessions, subprocesses, databases), then the file store.

        Safe to call twice. The file store goes last: a toolkit may still write an artifact while closing.
        """
        for toolkit in self._toolkits:
            close = getattr(toolkit, "close", None)
            if close is not None:
                close()
        self._toolkits.clear()
        if self.context.file_store is not None:
            self.context.file_store.close()

    # -- invocation -------------------------------------------------------------------------
    async def invoke(self, name: str, arguments: Mapping[str, Any] | str | None = None, *,
                     call_id: str | None = None, context: ToolContext | None = None,
                     timeout: float | None = None) -> ToolResult:
        found = self._tools.get(name)
        if found is None:
            message = f"there is no tool named {name!r}; available: {', '.join(self.names) or 'none'}"
            return ToolResult(name, error=ToolFailure("unknown_tool", message), call_id=call_id)
        return await found.invoke(arguments, context=context or self.context, call_id=call_id, timeout=timeout)

    # -- loading ----------------------------------------------------------------------------
    def load_file(self, path: str | Path) -> list[Tool]:
        """Import a user's Python file and add the tools and toolkit instances it defines."""
        file = Path(path).expanduser().resolve()
        if not file.is_file():
            raise ToolLoadError(f"tools file not found: {path}")
        module_name = f"agentd_user_tools_{file.stem}_{hashlib.sha1(str(file).encode()).hexdigest()[:8]}"
        spec = importlib.util.spec_from_file_location(module_name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            sys.modules.pop(module_name, None)
            raise ToolLoadError(f"{path}: {type(error).__name__}: {error}") from error
        found = _defined_in(module)
        if not found:
            raise ToolLoadError(f"{path} defines no @tool functions or Toolkit instances")
        return self.add(found)

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[Tool]:
        """Tools from installed packages: `[project.entry-points."agentd.tools"] name = "pkg.module:obj"`.

        The object may be a tool, a Toolkit (class or instance), a list of those, or a module.
        """
        added: list[Tool] = []
        for entry in entry_points(group=group):
            try:
                loaded = entry.load()
                if isinstance(loaded, ModuleType):
                    loaded = _defined_in(loaded)
                elif isinstance(loaded, type) and issubclass(loaded, Toolkit):
                    loaded = loaded()
                added += self.add(loaded)
            except Exception as error:
                raise ToolLoadError(f"entry point {entry.name} = {entry.value}: {error}") from error
        return added


def _defined_in(module: ModuleType) -> list[Any]:
    """Tools and toolkits the module itself defines (not ones it merely imported)."""
    found: list[Any] = []
    for value in vars(module).values():
        if isinstance(value, FunctionTool) and value.defined_in == module.__name__:
            found.append(value)
        elif isinstance(value, Toolkit) and type(value).__module__ == module.__name__:
            found.append(value)
    return found

