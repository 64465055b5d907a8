"""Optional choices several built-in tools share, with the words people say them in besides their
names (tools.schema.said_as): an agent may pick a value other than the default only when the
conversation said it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from tools.schema import counted_as, said_as, side_of_size

_FULL = ["all the weights", "all weights", "every weight", "all parameters", "all the parameters"]
_QLORA = ["4-bit", "4 bit", "quantized", "quantised"]
Method = Annotated[Literal["lora", "qlora", "full"], said_as(
    qlora=_QLORA, full=_FULL,
    # "full" alone may be the full data set.
    surely={"qlora": ["qlora", *_QLORA], "full": ["full fine-tune", "full fine-tuning", "full fine tune",
                                                  "full finetune", "full training", "full-parameter", *_FULL]})]

# Returning at once instead of waiting for a job or a deployment to finish.
Wait = Annotated[bool, said_as(false=[
    "wait", "waiting", "background", "block", "blocking", "come back", "return before", "as soon as", "later",
    "right away", "immediately", "at once", "meanwhile"],
    # "wait" alone may be "wait for it to finish".
    surely={"false": ["don't wait", "do not wait", "dont wait", "without waiting", "not wait", "no waiting",
                      "in the background", "right away", "immediately", "at once", "non-blocking"]})]

# Counts said with their unit ("a single epoch", "the first 20 questions", "capped at 50 training steps").
Epochs = Annotated[float, Field(gt=0, le=100), counted_as("epoch", "epochs", "pass", "passes")] | Literal["auto"]
SampleLimit = Annotated[int | None, Field(ge=1), counted_as("question", "questions", "sample", "samples")]
MaxSteps = Annotated[int | None, Field(ge=1), counted_as("step", "steps", "training step", "training steps",
                                                         "optimizer step", "optimizer steps")]
FewShot = Annotated[int | None, Field(ge=0, le=64), counted_as("shot", "shots", "worked example", "worked examples")]
# A duration written as the tools take it ("30s", "5m", "1h").
Duration = Annotated[str, counted_as(second="{}s", seconds="{}s", sec="{}s", secs="{}s", minute="{}m", minutes="{}m",
                                     min="{}m", mins="{}m", hour="{}h", hours="{}h")]

# A picture's sides, said together ("256 by 256", "1024x768") or alone ("50 pixels wide", "40 high").
WIDE = side_of_size("width", "wide", "pixels wide", "px wide", "pixels across", "px across")
HIGH = side_of_size("height", "high", "tall", "pixels high", "pixels tall", "px high", "px tall")
# A rectangle's left and top edges at the picture's own: a corner or half there said ("the top-left corner"),
# unless one elsewhere or the middle is said too (two crops, or a box placed by other words).
_MIDDLE = ["centre", "center", "middle"]
AT_LEFT = said_as(surely={"0": ["top left", "upper left", "bottom left", "lower left", "left half"]},
                  unless=["top right", "upper right", "bottom right", "lower right", "right half", *_MIDDLE])
AT_TOP = said_as(surely={"0": ["top left", "upper left", "top right", "upper right", "top half"]},
                 unless=["bottom left", "lower left", "bottom right", "lower right", "bottom half", *_MIDDLE])
