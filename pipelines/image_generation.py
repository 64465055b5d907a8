"""Text-to-image with a local diffusers pipeline folder (the `save_pretrained` layout), on the CPU.

Any text-conditioned `DiffusionPipeline` works (Stable Diffusion 1.x/2.x, SDXL, PixArt…): the folder's
`model_index.json` names the pipeline class. It is loaded on the first request, once, in float32 and
never from a hub; one image is drawn at a time, because a pipeline's scheduler keeps per-call state.
"""

from __future__ import annotations

import inspect
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIN_SIZE, MAX_SIZE, SIZE_STEP = 64, 2048, 8
MAX_STEPS = 150
# Torch seeds take 64 bits; 31 keep the reported seed exact in any JSON reader (JavaScript included).
_SEED_BITS = 31

StepCallback = Callable[[int, int], None]


class ImagePipelineError(RuntimeError):
    """The folder is missing, is not a diffusers pipeline, or could not be loaded; the message says which."""


class GenerationCancelled(RuntimeError):
    """The caller gave up (a timeout, a closed connection); raised between denoising steps."""


@dataclass(frozen=True)
class GeneratedImage:
    """One drawn picture (a PIL image) and the settings that reproduce it."""

    image: Any
    seed: int
    steps: int
    width: int
    height: int
    guidance_scale: float
    seconds: float
    ignored: tuple[str, ...] = field(default=())

    def settings(self) -> dict[str, Any]:
        """What a caller needs to draw the same picture again."""
        described = {"seed": self.seed, "steps": self.steps, "width": self.width, "height": self.height,
                     "guidance_scale": self.guidance_scale, "seconds": round(self.seconds, 3)}
        if self.ignored:
            described["ignored"] = list(self.ignored)
        return described


def check_request(width: int, height: int, steps: int) -> None:
    """Raise ValueError naming the first setting a pipeline cannot take."""
    for name, value in (("width", width), ("height", height)):
        if not (MIN_SIZE <= value <= MAX_SIZE and value % SIZE_STEP == 0):
            raise ValueError(f"{name} must be a multiple of {SIZE_STEP} between {MIN_SIZE} and {MAX_SIZE} "
                             f"(got {value})")
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS} (got {steps})")


def check_pipeline_folder(folder: Path) -> Path:
    """The folder, if it looks like a saved pipeline; else ImagePipelineError saying what is wrong."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ImagePipelineError(f"{folder} is not a folder")
    index = folder / "model_index.json"
    if not index.is_file():
        raise ImagePipelineError(f"{folder} is not a diffusers pipeline folder: it has no model_index.json")
    try:
        json.loads(index.read_text())
    except (OSError, ValueError) as error:
        raise ImagePipelineError(f"{index} is not readable JSON ({error})") from None
    return folder


class ImageGenerator:
    """A diffusers pipeline folder, loaded on first use; thread-safe (one load, one drawing at a time).

    Example:
        >>> generator = ImageGenerator(Path("~/models/sd-turbo"))        # doctest: +SKIP
        >>> drawn = generator.generate("a lighthouse at dusk", steps=4, seed=7)  # doctest: +SKIP
        >>> drawn.image.save("lighthouse.png")                          # doctest: +SKIP
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder).expanduser()
        self._pipeline: Any = None
        self._accepts: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._pipeline is not None

    def load(self) -> None:
        """Load now (a no-op when loaded); raises ImagePipelineError."""
        with self._lock:
            self._load_locked()

    def unload(self) -> None:
        """Drop the weights; the next request loads them again."""
        with self._lock:
            self._pipeline, self._accepts = None, frozenset()

    def generate(self, prompt: str, *, width: int = 512, height: int = 512, steps: int = 20,
                 guidance_scale: float = 7.5, seed: int | None = None, negative_prompt: str | None = None,
                 on_step: StepCallback | None = None, cancel: threading.Event | None = None) -> GeneratedImage:
        """Draw one picture; blocking (run it in a thread from async code).

        `on_step(step, total)` is called after each denoising step; setting `cancel` stops the
        drawing before the next step with GenerationCancelled. A None `seed` picks a random one,
        reported in the result, so any picture can be drawn again.
        """
        import torch

        check_request(width, height, steps)
        seed = secrets.randbits(_SEED_BITS) if seed is None else seed
        with self._lock:
            pipeline = self._load_locked()
            wanted = {"prompt": prompt, "width": width, "height": height, "num_inference_steps": steps,
                      "guidance_scale": guidance_scale, "negative_prompt": negative_prompt,
                      "generator": torch.Generator("cpu").manual_seed(seed), "output_type": "pil"}
            if on_step is not None or cancel is not None:
                wanted["callback_on_step_end"] = _step_callback(steps, on_step, cancel)
            arguments = {k: v for k, v in wanted.items() if k in self._accepts and v is not None}
            ignored = tuple(k for k, v in wanted.items() if k not in self._accepts and v is not None
                            and k != "callback_on_step_end")
            started = time.monotonic()
            with torch.inference_mode():
                image = pipeline(**arguments).images[0]
        return GeneratedImage(image, seed, steps, image.width, image.height, guidance_scale,
                              time.monotonic() - started, ignored)

    def _load_locked(self) -> Any:
        if self._pipeline is not None:
            return self._pipeline
        import torch
        from diffusers import DiffusionPipeline
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        folder = check_pipeline_folder(self.folder)
        # A server's log is no place for progress bars.
        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
        index = json.loads((folder / "model_index.json").read_text())
        # The safety checker is a separate model most saved folders leave out; never fetch one.
        extra = {"safety_checker": None, "requires_safety_checker": False} if "safety_checker" in index else {}
        try:
            pipeline = DiffusionPipeline.from_pretrained(folder, local_files_only=True, **extra)
        except Exception as error:  # diffusers raises many kinds for a broken folder; all mean the same to a caller
            raise ImagePipelineError(f"could not load the diffusers pipeline in {folder}: "
                                     f"{type(error).__name__}: {error}") from error
        accepts = frozenset(inspect.signature(pipeline.__call__).parameters)
        if "prompt" not in accepts:
            raise ImagePipelineError(f"{folder} holds a {type(pipeline).__name__}, which takes no text prompt")
        # Saved weights may be float16 (and stay so on load); CPU kernels want float32.
        if any(isinstance(part, torch.nn.Module) and part.dtype != torch.float32
               for part in pipeline.components.values()):
            pipeline.to("cpu", torch.float32)
        pipeline.set_progress_bar_config(disable=True)
        self._pipeline, self._accepts = pipeline, accepts
        return pipeline


def _step_callback(steps: int, on_step: StepCallback | None, cancel: threading.Event | None):
    def after_step(pipeline: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if on_step is not None:
            # Some schedulers run more (or fewer) timesteps than asked; report the real count.
            on_step(index + 1, int(getattr(pipeline, "num_timesteps", None) or steps))
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled("image generation was cancelled")
        return tensors

    return after_step
