"""Optional choices several built-in tools share, with the words people say them in besides their
names (tools.schema.said_as): an agent may pick a value other than the default only when the
conversation said it."""

from __future__ import annotations

from typing import Annotated, Literal

from tools.schema import said_as

Method = Annotated[Literal["lora", "qlora", "full"], said_as(
    qlora=["4-bit", "4 bit", "quantized", "quantised"],
    full=["all the weights", "all weights", "every weight", "all parameters", "all the parameters"])]

# Returning at once instead of waiting for a job or a deployment to finish.
Wait = Annotated[bool, said_as(false=[
    "wait", "waiting", "background", "block", "blocking", "come back", "return before", "as soon as", "later",
    "right away", "immediately", "at once", "meanwhile"])]
