"""`python`: run code in the sandbox and return its output, its last value and its figures."""

from __future__ import annotations

from typing import Annotated

from tools.base import ToolError
from tools.decorator import Toolkit, tool
from tools.media import Image
from tools.sandbox import SandboxLimits, run_python


class PythonTool(Toolkit):
    """The sandboxed Python tool; limits are per call (see `tools.sandbox` for what is enforced)."""

    def __init__(self, limits: SandboxLimits = SandboxLimits()):
        self.limits = limits

    # The sandbox enforces its own wall-clock limit; the tool's timeout only backs it up.
    @tool(name="python", timeout=120)
    def run(self, code: Annotated[str, "Python source; the value of a final expression is returned"]) -> list[str | Image]:
        """Run Python code in an isolated process; returns its printed output, last value and figures.

        The value of a final expression is returned, and so are matplotlib figures and image
        files the code saved. The standard library, numpy and matplotlib can be imported; there is no network, no
        subprocess, no file access outside a fresh working directory, and limits on CPU time,
        memory and output. Each call starts from a clean state.
        """
        outcome = run_python(code, self.limits)
        report = []
        if outcome.stdout:
            report.append(f"stdout:\n{outcome.stdout.rstrip()}")
        if outcome.value is not None:
            report.append(f"value: {outcome.value}")
        report += [f"note: {note}" for note in outcome.notes]
        if outcome.error:
            raise ToolError("\n".join([*report, outcome.error.rstrip()]), stdout=outcome.stdout)
        images = [Image(image.data, image.mime_type, image.name) for image in outcome.images
                  if image.mime_type != "image/svg+xml"]
        return ["\n".join(report) or "(no output)", *images]
