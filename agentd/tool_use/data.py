"""The adapter's training set: synthetic episodes rendered into exactly what the agents' model reads
and writes — ReAct steps (`EngineChatModel.step_messages` + the transcript rendering), ReWOO plans
(`rewoo.planner_messages`) and solver answers (`rewoo.solver_messages`) — as OpenAI `messages` rows
the training pipeline reads. Built from the tool registry's own definitions, so a renamed tool or
argument shows up here, not as a silently wrong adapter."""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentd.agents.context import FINAL_ANSWER
from agentd.agents.rewoo import planner_messages, solver_messages
from agentd.llm.chat_model import ToolCall
from agentd.llm.engine_chat import EngineChatModel, _flatten
from agentd.tool_use import chain_scenarios as chains
from agentd.tool_use import model_scenarios as models
from agentd.tool_use import option_scenarios as options
from agentd.tool_use import recovery_scenarios as recoveries
from agentd.tool_use import media_scenarios as media
from agentd.tool_use import scenarios as basic
from agentd.tool_use.scenarios import Episode

# How often each kind of episode is drawn: single calls (and the same tools with their optional
# arguments said in words), chains whose later arguments come from earlier results, a failed call
# mended, the workflow and its follow-up, pictures, no tool at all, unseen tools.
Mix = list[tuple[Callable[[random.Random], Episode], int]]  # episode makers and how often each is drawn
MIX: Mix = [
    (basic.arithmetic, 10), (basic.two_calculations, 3), (basic.python_task, 5), (basic.python_instruction, 7),
    (basic.knowledge, 6),
    (basic.knowledge_then_calculate, 3), (basic.ingest, 2), (basic.documents, 1),
    (models.finetune, 3), (options.finetune_options, 6), (models.evaluate, 3), (options.evaluate_options, 5),
    (models.compare, 2), (options.compare_options, 3), (models.deploy, 2), (options.deploy_options, 5),
    (models.undeploy, 1), (options.undeploy_words, 2), (models.list_deployments, 1), (options.listings, 3),
    (models.job_status_episode, 3), (models.list_jobs_episode, 3), (models.leaderboard, 2), (models.workflow, 10),
    (models.workflow_then_deploy, 3), (models.finetune_then, 4), (chains.chain, 12), (recoveries.recovery, 9),
    (media.vision, 16), (media.faces_then_crop, 2), (media.text_to_image, 5), (media.draw_then_rotate, 2),
    (media.no_tool, 8), (media.custom_tool, 3),
]
# A second stage trained on from the first's adapter (build --continue-from): the same mix, and any two
# single-call requests said as one (chains.composed), which the first stage's adapter most often stopped
# halfway through.
SECOND_STAGE_MIX = MIX + [(chains.composed, 40)]
MIXES = {"first stage": MIX, "second stage": SECOND_STAGE_MIX}  # as manifests name them
FINAL_THOUGHTS = ["The result answers the question.", "The tool gave the answer.", "Answer from the result.",
                  "That is what the user asked for."]


def server_tools() -> list[dict[str, Any]]:
    """The definitions an agent on the server sees: built-ins plus the job, evaluation, deployment and
    workflow toolkits (their services are not needed to describe them)."""
    from tools import FileStore, ToolRegistry
    from tools.builtin import builtin_tools
    from tools.builtin.deployment import DeploymentTools
    from tools.builtin.evaluation import EvaluationTools
    from tools.builtin.jobs import JobTools
    from tools.builtin.workflow import WorkflowTools

    folder = Path(tempfile.mkdtemp(prefix="agentd-tool-use-"))
    registry = ToolRegistry(builtin_tools(folder), file_store=FileStore(folder / "files"))
    for toolkit in (JobTools(None), EvaluationTools(None), DeploymentTools(None), WorkflowTools(None)):
        registry.add(toolkit)
    try:
        return registry.definitions(registry.names)
    finally:
        registry.close()


def episodes(count: int, seed: int, mix: Mix = MIX) -> list[Episode]:
    rng = random.Random(seed)
    makers, weights = zip(*mix, strict=True)
    return [rng.choices(makers, weights)[0](rng) for _ in range(count)]


def requests(seed: int = 0, count: int = 1200, mix: Mix = MIX) -> list[str]:
    """Every user request the generator writes (follow-ups' first turns included)."""
    found = []
    for episode in episodes(count, seed, mix):
        found += [episode.request] + ([episode.before.request] if episode.before else [])
    return found


def trained_requests(manifest: dict[str, Any]) -> list[str]:
    """Every request the adapter a manifest describes was trained on, stage by stage: what the
    benchmark's held-out check compares against."""
    stages = [manifest["continued_from"], manifest] if "continued_from" in manifest else [manifest]
    return [request for stage in stages
            for request in requests(stage["seed"], stage["episodes"], MIXES[stage.get("mix", "first stage")])]


def _ordered(arguments: dict[str, Any], definition: dict[str, Any] | None) -> dict[str, Any]:
    """Arguments in the schema's property order: constrained decoding writes them in that order."""
    if definition is None:
        return arguments
    order = list(definition["function"]["parameters"].get("properties", {}))
    return dict(sorted(arguments.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))


class Renderer:
    """Turns episodes into training rows for one tool set."""

    def __init__(self, tools: list[dict[str, Any]], rng: random.Random):
        self.tools = tools
        self.by_name = {t["function"]["name"]: t for t in tools}
        self.rng = rng
        self.llm = EngineChatModel(None, "tool-use", known_tools=frozenset(self.by_name))  # type: ignore[arg-type]

    def _shown(self, episode: Episode) -> list[dict[str, Any]]:
        """The listing: every tool, or now and then a subset (servers run with some tools off)."""
        needed = {call.tool for e in (episode.before, episode) if e for call in e.calls}
        tools = [t for t in self.tools if t["function"]["name"] in needed or self.rng.random() > 0.25] \
            if self.rng.random() < 0.3 else list(self.tools)
        return tools + episode.extra_tools

    def _definition(self, name: str, extra: list[dict[str, Any]]) -> dict[str, Any] | None:
        return self.by_name.get(name) or next((t for t in extra if t["function"]["name"] == name), None)

    def _turns(self, episode: Episode) -> list[dict[str, Any]]:
        turns: list[dict[str, Any]] = [{"role": "user", "content": episode.request}]
        for index, call in enumerate(episode.calls):
            call_id = f"call_{index}"
            turns += [self._step(call, call_id, episode),
                      {"role": "tool", "tool_call_id": call_id, "name": call.tool, "content": call.observation}]
        return turns

    def _untrained_history(self, messages: list[dict[str, Any]], episode: Episode) -> list[dict[str, Any]]:
        """The earlier answer a conversation carries, and a call the run then mends, are context, not
        targets (weight 0)."""
        untrained = {_flatten([self._step(call, "wrong", episode)])[0]["content"] for call in episode.calls if call.wrong}
        if episode.before is not None:
            untrained.add(episode.before.answer)
        return [{**m, "weight": 0} if m["role"] == "assistant" and m["content"] in untrained else m for m in messages]

    def _step(self, call, call_id: str, episode: Episode) -> dict[str, Any]:
        arguments = _ordered(call.arguments, self._definition(call.tool, episode.extra_tools))
        return {"role": "assistant", "content": call.thought, "tool_calls": [ToolCall(call_id, call.tool, arguments)]}

    def react(self, episode: Episode) -> list[dict[str, str]]:
        transcript: list[dict[str, Any]] = []
        if episode.before is not None:
            if self.rng.random() < 0.5:  # a thread: the earlier steps are in the agent's state
                transcript += self._turns(episode.before)
            else:  # a client resending the conversation: the earlier answer, as text
                transcript += [{"role": "user", "content": episode.before.request},
                               {"role": "assistant", "content": episode.before.answer}]
        transcript += self._turns(episode)
        transcript.append({"role": "assistant", "content": self.rng.choice(FINAL_THOUGHTS) if episode.calls else
                           "No tool is needed.", "tool_calls": [ToolCall("final", "final_answer",
                                                                          {"answer": episode.answer})]})
        listing = self._shown(episode) + [FINAL_ANSWER]
        return self._untrained_history(_flatten(self.llm.step_messages(transcript, listing)), episode)

    def _plan(self, episode: Episode) -> list[dict[str, Any]]:
        return [{"id": f"#E{i}", "tool": call.tool, "thought": call.thought,
                 "arguments": _ordered(call.planned or call.arguments, self._definition(call.tool, episode.extra_tools))}
                for i, call in enumerate(episode.calls, 1)]

    def _history(self, episode: Episode) -> list[dict[str, str]]:
        return [{"question": episode.before.request, "answer": episode.before.answer}] if episode.before else []

    def planner(self, episode: Episode) -> list[dict[str, str]]:
        messages = planner_messages(self.llm, self._shown(episode), self._history(episode), episode.request)
        plan = {"steps": [{"thought": item["thought"], "tool": item["tool"], "arguments": item["arguments"]}
                          for item in self._plan(episode)]}
        return self._untrained_history([*messages, {"role": "assistant", "content": json.dumps(plan)}], episode)

    def solver(self, episode: Episode) -> list[dict[str, str]]:
        plan = self._plan(episode)
        evidence = {item["id"]: call.observation for item, call in zip(plan, episode.calls, strict=True)}
        messages = solver_messages(plan, evidence, self._history(episode), episode.request)
        return self._untrained_history([*messages, {"role": "assistant", "content": episode.answer}], episode)


def training_rows(count: int, seed: int, tools: list[dict[str, Any]] | None = None,
                  planner_share: float = 0.35, solver_share: float = 0.15,
                  mix: Mix = MIX) -> list[dict[str, Any]]:
    """`count` episodes as ReAct rows, and a share of the plannable ones as ReWOO planner and solver rows."""
    rng = random.Random(seed + 1)
    renderer = Renderer(tools if tools is not None else server_tools(), rng)
    rows = []
    for episode in episodes(count, seed, mix):
        rows.append({"messages": renderer.react(episode), "kind": f"react/{episode.kind}"})
        if episode.plannable or not episode.calls:  # no call: the plan is empty, the solver answers
            if rng.random() < planner_share:
                rows.append({"messages": renderer.planner(episode), "kind": f"plan/{episode.kind}"})
            if rng.random() < solver_share:
                rows.append({"messages": renderer.solver(episode), "kind": f"solve/{episode.kind}"})
    rng.shuffle(rows)
    return rows
