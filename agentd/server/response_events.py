"""A response's output items, built piece by piece, and the Responses stream events announcing them.

One `ResponseEvents` per response. Text, a client-side function call, a reasoning step and a
server-side tool call each become an output item; an item is opened by its first piece (closing
the one before it) and its events follow OpenAI's order: `output_item.added`, the part and its
deltas, their `done` events, `output_item.done`. Every event carries its `sequence_number`.
Agents' tool calls are `mcp_call` items (run by the server, with their output): a client must
not run them, as it would run a `function_call`.
"""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any

Event = dict[str, Any]


def item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponseEvents:
    def __init__(self, response: dict[str, Any]):
        self.response = response
        self.output: list[dict[str, Any]] = response["output"]
        self._sequence = 0
        self._open: dict[str, Any] | None = None  # the item text or arguments are being written to
        self._server_calls: dict[str, int] = {}  # call id -> output index, until the result comes

    def event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def started(self) -> list[Event]:
        return [self.event("response.created", response=self.snapshot()),
                self.event("response.in_progress", response=self.snapshot())]

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.response)

    def text(self, delta: str) -> list[Event]:
        events = [] if self._is_open("message") else self._add({
            "id": item_id("msg"), "type": "message", "role": "assistant", "status": "in_progress", "content": []})
        item = self._open
        if not item["content"]:
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            item["content"].append(part)
            events.append(self.event("response.content_part.added", item_id=item["id"], output_index=self._index(),
                                     content_index=0, part=copy.deepcopy(part)))
        if delta:
            item["content"][0]["text"] += delta
            events.append(self.event("response.output_text.delta", item_id=item["id"], output_index=self._index(),
                                     content_index=0, delta=delta, logprobs=[]))
        return events

    def function_call(self, call_id: str, name: str) -> list[Event]:
        return self._add({"id": item_id("fc"), "type": "function_call", "status": "in_progress",
                          "call_id": call_id, "name": name, "arguments": ""})

    def function_arguments(self, delta: str) -> list[Event]:
        if not self._is_open("function_call") or not delta:
            return []
        self._open["arguments"] += delta
        return [self.event("response.function_call_arguments.delta", item_id=self._open["id"],
                           output_index=self._index(), delta=delta)]

    def reasoning(self, text: str) -> list[Event]:
        """One step of an agent's reasoning: an item of its own, whole."""
        events = self._add({"id": item_id("rs"), "type": "reasoning", "summary": [], "content": [],
                            "status": "in_progress"})
        item = self._open
        item["content"].append({"type": "reasoning_text", "text": text})
        events.append(self.event("response.reasoning_text.delta", item_id=item["id"], output_index=self._index(),
                                 content_index=0, delta=text))
        return events + self.close()

    def server_call(self, call_id: str, name: str, arguments: str) -> list[Event]:
        events = self.close()
        item = {"id": item_id("mcp"), "type": "mcp_call", "server_label": "agentd", "name": name,
                "arguments": arguments, "output": None, "error": None, "status": "in_progress"}
        self.output.append(item)
        index = len(self.output) - 1
        self._server_calls[call_id] = index
        return events + [
            self.event("response.output_item.added", output_index=index, item=copy.deepcopy(item)),
            self.event("response.mcp_call_arguments.done", item_id=item["id"], output_index=index, arguments=arguments),
            self.event("response.mcp_call.in_progress", item_id=item["id"], output_index=index)]

    def server_result(self, call_id: str, output: str, failed: bool) -> list[Event]:
        index = self._server_calls.pop(call_id, None)
        if index is None:
            return []
        item = self.output[index]
        item.update(output=output, status="failed" if failed else "completed", error=output if failed else None)
        kind = "response.mcp_call.failed" if failed else "response.mcp_call.completed"
        return [self.event(kind, item_id=item["id"], output_index=index),
                self.event("response.output_item.done", output_index=index, item=copy.deepcopy(item))]

    def close(self, status: str = "completed") -> list[Event]:
        """Ends the item being written, with its `done` events."""
        item, self._open = self._open, None
        if item is None:
            return []
        index, events = len(self.output) - 1, []
        if item["type"] == "message":
            for content_index, part in enumerate(item["content"]):
                events.append(self.event("response.output_text.done", item_id=item["id"], output_index=index,
                                         content_index=content_index, text=part["text"], logprobs=[]))
                events.append(self.event("response.content_part.done", item_id=item["id"], output_index=index,
                                         content_index=content_index, part=copy.deepcopy(part)))
        elif item["type"] == "function_call":
            events.append(self.event("response.function_call_arguments.done", item_id=item["id"],
                                     output_index=index, name=item["name"], arguments=item["arguments"]))
        elif item["type"] == "reasoning":
            events.append(self.event("response.reasoning_text.done", item_id=item["id"], output_index=index,
                                     content_index=0, text=item["content"][0]["text"]))
        item["status"] = status
        return events + [self.event("response.output_item.done", output_index=index, item=copy.deepcopy(item))]

    def finished(self, usage: dict[str, int], incomplete: str | None = None) -> list[Event]:
        """The last events: `response.completed`, or `response.incomplete` with the reason (the token limit)."""
        events = self.close("incomplete" if incomplete else "completed")  # cut by the limit: incomplete
        for index in self._server_calls.values():  # a call the run stopped before it answered
            self.output[index]["status"] = "incomplete"
        self._server_calls.clear()
        self.response.update(status="incomplete" if incomplete else "completed", completed_at=int(time.time()),
                             incomplete_details={"reason": incomplete} if incomplete else None,
                             usage=response_usage(usage))
        kind = "response.incomplete" if incomplete else "response.completed"
        return events + [self.event(kind, response=self.snapshot())]

    def failed(self, code: str, message: str) -> list[Event]:
        events = self.close()
        self.response.update(status="failed", error={"code": code, "message": message})
        return events + [self.event("error", code=code, message=message, param=None),
                         self.event("response.failed", response=self.snapshot())]

    def _add(self, item: dict[str, Any]) -> list[Event]:
        events = self.close()
        self.output.append(item)
        self._open = item
        return events + [self.event("response.output_item.added", output_index=self._index(),
                                    item=copy.deepcopy(item))]

    def _is_open(self, kind: str) -> bool:
        return self._open is not None and self._open["type"] == kind

    def _index(self) -> int:
        # The item being written is always the last: a server call is added only after it is closed.
        return len(self.output) - 1


def response_usage(usage: dict[str, int]) -> dict[str, Any]:
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion}
