"""Built-in tools: calculator, python (sandboxed), knowledge base search."""

from __future__ import annotations

from pathlib import Path

from tools.builtin.calculator import calculator
from tools.builtin.knowledge import KnowledgeTools
from tools.builtin.python import PythonTool


def builtin_tools(data_dir: Path, *, embedder: object | None = None, image_pipeline: Path | None = None) -> list[object]:
    """Every built-in tool, with its state kept under `data_dir`; `image_pipeline` is the diffusers
    folder `text_to_image` draws with (None: the tool explains how to configure one)."""
    from tools.knowledge_base import KnowledgeBase

    tools: list[object] = [calculator, PythonTool(),
                           KnowledgeTools(KnowledgeBase(Path(data_dir) / "knowledge.sqlite", embedder))]
    from tools.builtin.vision import VISION_TOOLS

    tools += VISION_TOOLS
    from tools.builtin.image_generation import ImageGenerationTools

    tools.append(ImageGenerationTools(image_pipeline))
    return tools
