"""Episodes where a call fails and the next step mends it: the wrong call is context (never a
target, so the adapter does not learn to make it), the error is the real tools' error text, and the
trained step is the call that fixes it. Without these the adapter answered right after any error
("The tool gave the answer."), since every result it had seen was a success."""

from __future__ import annotations

import random

from agentd.tool_use import model_scenarios as models
from agentd.tool_use import scenarios as basic
from agentd.tool_use.scenarios import Call, Episode, hexid, pick

BUILTIN_TASKS = ("arc_challenge, arc_easy, arithmetic, boolq, hellaswag, mmlu_subset, openbookqa, piqa, sciq, "
                 "support_qa, winogrande")
FIX_THOUGHTS = ["That failed; fix the call.", "The error says what to change.", "Try again with the right input.",
                "Wrong tool for this; use the right one."]


def error(tool: str, kind: str, message: str) -> str:
    """A failed call's observation, as `ToolResult` renders it for the agent."""
    return f"Error ({kind}) from tool '{tool}': {message}"


def _wrong(tool: str, arguments: dict, observation: str, thought: str) -> Call:
    return Call(tool, arguments, observation, thought, wrong=True)


def recovery(rng: random.Random) -> Episode:
    kind = rng.choice(["search_not_ingest", "python_syntax", "unknown_task", "calculator_name", "undeploy_not_deploy",
                       "status_not_evaluate", "search_again"])
    fix = rng.choice(FIX_THOUGHTS)
    if kind in ("search_not_ingest", "search_again"):
        good = basic.knowledge(rng)
        topic = good.calls[0].arguments["query"]
        if kind == "search_not_ingest":
            first = _wrong("knowledge_ingest", {"document": topic}, error(
                "knowledge_ingest", "invalid_arguments", "invalid arguments — document: Value error, expected a file: "
                "a stored file id (file-…) or a data file name"), "Look it up.")
        else:
            narrow = f"{topic} {pick(rng, 'rules', 'policy details', 'section 4', 'exact wording')}"
            first = _wrong("knowledge_search", {"query": narrow}, error(
                "knowledge_search", "tool_error", f"nothing in the knowledge base matches {narrow!r}"),
                "Search the documents.")
        second = Call("knowledge_search", {"query": topic}, good.calls[0].observation,
                      pick(rng, "Search the documents instead.", "A shorter query.") if kind == "search_again"
                      else "Search the documents instead.")
        return Episode("recovery/knowledge", good.request, [first, second], good.answer, plannable=False)
    if kind == "python_syntax":
        good = basic.python_task(rng)
        code = good.calls[0].arguments["code"]
        broken = code[:-1] if code.endswith(")") else code + ")"
        message = ('  File "<python>", line 1\n    ' + broken.splitlines()[-1] +
                   "\n    ^\nSyntaxError: " + ("'(' was never closed" if code.endswith(")") else "unmatched ')'"))
        first = _wrong("python", {"code": broken}, error("python", "tool_error", message), good.calls[0].thought)
        second = Call("python", {"code": code}, good.calls[0].observation, "Fix the syntax and run it again.")
        return Episode("recovery/python", good.request, [first, second], good.answer, plannable=False)
    if kind == "unknown_task":
        good = models.evaluate(rng)
        invented = pick(rng, "accuracy", "benchmark", "qa_test", "general", "reasoning")
        first = _wrong("evaluate", {**good.calls[0].arguments, "tasks": [invented]}, error(
            "evaluate", "tool_error", f"tasks[0]: unknown task {invented!r}; built-in tasks: {BUILTIN_TASKS}"),
            "Evaluate the model.")
        second = Call("evaluate", good.calls[0].arguments, good.calls[0].observation, "Use the task the user named.")
        return Episode("recovery/evaluate", good.request, [first, second], good.answer, plannable=False)
    if kind == "calculator_name":
        good = basic.arithmetic(rng)
        expression = good.calls[0].arguments["expression"]
        mistaken = pick(rng, f"{expression} percent", f"total({expression})", f"{expression} =", f"x = {expression}",
                        f"answer({expression})")
        first = _wrong("calculator", {"expression": mistaken}, error("calculator", "tool_error", _refusal(mistaken)),
                       good.calls[0].thought)
        second = Call("calculator", good.calls[0].arguments, good.calls[0].observation,
                      "Only numbers and operators.")
        return Episode("recovery/calculator", good.request, [first, second], good.answer, plannable=False)
    if kind == "undeploy_not_deploy":
        good = models.undeploy(rng)
        target = good.calls[0].arguments["deployment"]
        if target.startswith("ft:"):
            return recovery(rng)
        first = _wrong("deploy", {"model": target}, error(
            "deploy", "tool_error", f"{target!r} is not a model or fine-tune known here; known: "
            f"smollm2-135m-instruct, ft:smollm2-135m-instruct:agentd::{hexid(rng, 8)}"), "Deploy the model.")
        second = Call("undeploy", {"deployment": target}, good.calls[0].observation, "It is a deployment: undeploy it.")
        return Episode("recovery/undeploy", good.request, [first, second], good.answer, plannable=False)
    # A job id sent where a model id belongs.
    good = models.job_status_episode(rng)
    job = good.calls[0].arguments["job_id"]
    first = _wrong("evaluate", {"model": job, "tasks": ["arc_easy"]}, error(
        "evaluate", "tool_error", f"model {job!r} is not served here; served: smollm2-135m-instruct"),
        "Evaluate the model.")
    second = Call("job_status", {"job_id": job}, good.calls[0].observation, "That is a job id: check the job.")
    return Episode("recovery/job_status", good.request, [first, second], good.answer, plannable=False)


def _refusal(expression: str) -> str:
    """The calculator's own message for an expression it cannot take."""
    from tools.base import ToolError
    from tools.builtin.calculator import evaluate

    try:
        evaluate(expression)
    except ToolError as refused:
        return str(refused)
    raise ValueError(f"{expression!r} is not a mistake")
