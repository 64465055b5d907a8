"""`text_to_image`: draw a picture from a prompt with the server's local diffusers pipeline.

The pipeline folder comes from `AGENTD_IMAGE_PIPELINE` or `agentd serve --image-pipeline PATH`; it
loads on the first call, in a worker thread, so a server that never draws never pays for it.
Each denoising step is reported as progress.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Annotated

from pydantic import Field

from pipelines.image_generation import (MAX_SIZE, MAX_STEPS, MIN_SIZE, SIZE_STEP, GenerationCancelled,
                                        ImageGenerator, ImagePipelineError)
from tools.base import ToolError
from tools.builtin.choices import HIGH, WIDE
from tools.context import ToolContext
from tools.decorator import Toolkit, tool
from tools.media import Image

HOW_TO_CONFIGURE = ("configure a local diffusers pipeline folder (one saved with `pipeline.save_pretrained(PATH)`) "
                    "by starting the server with `AGENTD_IMAGE_PIPELINE=/path/to/pipeline agentd serve` or "
                    "`agentd serve --image-pipeline /path/to/pipeline`")
# Minutes per picture are normal on a CPU at 512x512; the load comes on top.
_TIMEOUT_S = 3600.0

Size = Annotated[int, Field(ge=MIN_SIZE, le=MAX_SIZE, multiple_of=SIZE_STEP)]


class ImageGenerationTools(Toolkit):
    """`text_to_image` over one pipeline folder, or over none (then the tool says how to configure one)."""

    def __init__(self, pipeline_folder: Path | None):
        self.generator = ImageGenerator(pipeline_folder) if pipeline_folder else None

    @tool(long_running=True, timeout=_TIMEOUT_S)
    async def text_to_image(self, prompt: Annotated[str, Field(min_length=1, max_length=4000)], ctx: ToolContext,
                            width: Annotated[Size, WIDE] = 512, height: Annotated[Size, HIGH] = 512,
                            steps: Annotated[int, Field(ge=1, le=MAX_STEPS)] = 20,
                            guidance_scale: Annotated[float, Field(ge=0, le=50)] = 7.5,
                            seed: Annotated[int | None, Field(ge=0, lt=2**32)] = None,
                            negative_prompt: str | None = None) -> list[Image | dict]:
        """Draw a picture from a text description with the local image-generation model; returns a PNG.

        Args:
            prompt: what the picture shows, in plain words.
            width: width in pixels, a multiple of 8 from 64 to 2048.
            height: height in pixels, a multiple of 8 from 64 to 2048.
            steps: denoising steps; more is slower and usually finer.
            guidance_scale: how strictly to follow the prompt (about 7 is usual; 0 ignores it).
            seed: the same seed and settings draw the same picture; omitted: a random seed, reported back.
            negative_prompt: what the picture should not show.
        """
        if self.generator is None:
            raise ToolError(f"text_to_image has no image model: {HOW_TO_CONFIGURE}")
        loop = asyncio.get_running_loop()
        if not self.generator.loaded:
            ctx.report_progress(stage="loading", pipeline=str(self.generator.folder))

        def on_step(step: int, total: int) -> None:
            # The pipeline runs in a worker thread; progress sinks (agent step writers) belong to the loop.
            loop.call_soon_threadsafe(lambda: ctx.report_progress(stage="denoising", step=step, total_steps=total))

        cancel = threading.Event()
        try:
            drawn = await asyncio.to_thread(
                self.generator.generate, prompt, width=width, height=height, steps=steps,
                guidance_scale=guidance_scale, seed=seed, negative_prompt=negative_prompt,
                on_step=on_step, cancel=cancel)
        except asyncio.CancelledError:
            cancel.set()  # a timeout or a closed connection: free the pipeline for the next caller
            raise
        except ImagePipelineError as error:
            raise ToolError(f"{error}; {HOW_TO_CONFIGURE}") from None
        except (ValueError, GenerationCancelled) as error:
            raise ToolError(str(error)) from None
        picture = Image.from_pil(drawn.image)
        picture.filename = f"text_to_image-{drawn.seed}.png"
        return [picture, drawn.settings()]

    def close(self) -> None:
        """Let the weights go when the server closes its tools."""
        if self.generator is not None:
            self.generator.unload()
