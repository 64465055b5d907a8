"""Built-in tools: calculator, python (sandboxed), knowledge base search."""

from __future__ import annotations

from pathlib import Path

from tools.builtin.calculator import calculator
from tools.builtin.knowledge import KnowledgeTools
from tools.builtin.python import PythonTool


def builtin_tools(data_dir: Path, *, embedder: object | None = None) -> list[object]:
    """Every built-in tool, with its state kept under `data_dir`."""
    from tools.knowledge_base import KnowledgeBase

    return [calculator, PythonTool(), KnowledgeTools(KnowledgeBase(Path(data_dir) / "knowledge.sqlite", embedder))]
