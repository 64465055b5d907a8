"""The tool registry, the @tool decorator, built-in tools, and tools over HTTP and MCP.

May import `pipelines`, `training`, `evaluation` and `agentd.jobs`; never the server.

    from tools import tool, Image

    @tool
    def flip(image: Image) -> Image:
        '''Flip an image upside down.

        Args:
            image: the picture to flip.
        '''
        return Image.from_pil(image.to_pil().rotate(180))
"""

from tools.base import Tool, ToolArgumentError, ToolError
from tools.context import ToolContext
from tools.decorator import FunctionTool, Toolkit, tool
from tools.files import FileStore
from tools.media import File, Image
from tools.registry import ToolLoadError, ToolRegistry
from tools.results import ToolResult
from tools.schema import (ToolDefinitionError, counted_as, id_of, one_of_names, path_or_id, said_as, said_or_read,
                          side_of_size)

__all__ = ["File", "FileStore", "FunctionTool", "Image", "Tool", "ToolArgumentError", "ToolContext",
           "ToolDefinitionError", "ToolError", "ToolLoadError", "ToolRegistry", "ToolResult", "Toolkit", "counted_as",
           "id_of", "one_of_names", "path_or_id", "said_as", "said_or_read", "side_of_size", "tool"]
