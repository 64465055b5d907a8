"""Requests that set a tool's optional arguments in words: a learning rate, a step cap, a method,
a sample limit, few-shot examples, an engine, an idle timeout, "don't wait". Every optional
argument of the model tools is said here in several ways, so the adapter learns to read the
value out of the request instead of leaving it at the default or inventing one."""

from __future__ import annotations

import random
from typing import Any

from agentd.tool_use.model_scenarios import (TASK_WORDS, _data, _deployed, _eval_result, _finetune_result, _model,
                                             _tuned_id, compare)
from agentd.tool_use.scenarios import Call, Episode, hexid, obs, pick
from pipelines.embedded import EMBEDDED_MODEL_ID

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}


def _no_wait(rng: random.Random) -> str:
    return pick(rng, ", and don't wait for it", " in the background", "; just start it and come back",
                ", no need to wait for the result", " without blocking", " - return as soon as it has started",
                ", I'll check on it later")


def finetune_options(rng: random.Random) -> Episode:
    said, model = _model(rng)
    data = _data(rng)
    arguments: dict[str, Any] = {"model": model, "training_file": data}
    parts: list[str] = []
    for option in rng.sample(["method", "epochs", "max_steps", "learning_rate", "batch_size", "wait"], rng.choice([1, 1, 2])):
        if option == "method":
            method = rng.choice(["lora", "lora", "qlora", "full"])
            arguments["method"] = method
            parts.append({"lora": pick(rng, " with LoRA", " using a LoRA adapter", " (LoRA)", " via low-rank adapters"),
                          "qlora": pick(rng, " with QLoRA", " using 4-bit QLoRA", " in qlora mode"),
                          "full": pick(rng, " as a full fine-tune", ", updating all the weights", " (full training, no LoRA)")}
                         [method])
        elif option == "epochs":
            epochs = rng.choice([1, 2, 3, 4, 5])
            arguments["epochs"] = epochs
            parts.append(pick(rng, f" for {epochs} epochs", f", {epochs} passes over the data",
                              f" for {NUMBER_WORDS[epochs]} epoch{'s' if epochs > 1 else ''}",
                              f", epochs={epochs}"))
        elif option == "max_steps":
            steps = rng.choice([10, 20, 30, 40, 60, 80, 100, 200])
            arguments["max_steps"] = steps
            parts.append(pick(rng, f", at most {steps} steps", f", stop after {steps} steps", f" (max {steps} steps)",
                              f", limited to {steps} optimizer steps", f" for no more than {steps} steps"))
        elif option == "learning_rate":
            rate = rng.choice([0.0001, 0.0002, 0.0005, 0.001, 0.00005, 0.0003])
            arguments["learning_rate"] = rate
            shown = f"{rate:.5f}".rstrip("0")
            parts.append(pick(rng, f" with a learning rate of {shown}", f", lr {shown}", f" (learning rate {shown})",
                              f", learning_rate={shown}"))
        elif option == "batch_size":
            size = rng.choice([1, 2, 4, 8, 16])
            arguments["batch_size"] = size
            parts.append(pick(rng, f", batch size {size}", f" with batches of {size}", f" ({size} examples per batch)"))
        else:
            arguments["wait"] = False
            parts.append(_no_wait(rng))
    extra = "".join(parts)
    text = pick(rng, f"Fine-tune {said} on {data}{extra}.", f"Please adapt {said} to {data}{extra}.",
                f"train {said} using the data in {data}{extra}", f"Start training {said} with {data}{extra}.",
                f"I'd like {said} tuned on {data}{extra}.", f"Could you fine-tune {said} with my file {data}{extra}?",
                f"Launch a fine-tuning job: {said}, data {data}{extra}.")
    tuned = _tuned_id(model, rng)
    result = _finetune_result(model, tuned, rng)
    if arguments.get("wait") is False:
        result = {"job_id": result["job_id"], "kind": "fine_tune", "status": rng.choice(["queued", "running"]),
                  "model": model}
        answer = f"Started {result['job_id']} ({result['status']}); ask me for its status any time."
    else:
        answer = f"Done: the fine-tuned model is {tuned} (final loss {result['final_loss']})."
    return Episode("finetune", text, [Call("finetune", arguments, obs(result), "Fine-tune the model.")], answer)


def evaluate_options(rng: random.Random) -> Episode:
    said, model = _model(rng) if rng.random() < 0.6 else (lambda t: (t, t))(_tuned_id("smollm2", rng))
    picked = rng.sample(TASK_WORDS, rng.choice([1, 1, 1, 2, 3]))
    words = ", ".join(w for w, _ in picked[:-1]) + (" and " if len(picked) > 1 else "") + picked[-1][0]
    arguments: dict[str, Any] = {"model": model, "tasks": [t for _, t in picked]}
    parts = []
    for option in rng.sample(["limit", "num_fewshot", "wait"], rng.choice([1, 1, 2])):
        if option == "limit":
            limit = rng.choice([10, 20, 25, 30, 40, 50, 100, 200])
            arguments["limit"] = limit
            parts.append(pick(rng, f" on {limit} questions", f", just {limit} samples", f" (limit {limit})",
                              f", the first {limit} items only", f" with a sample of {limit}"))
        elif option == "num_fewshot":
            shots = rng.choice([0, 1, 3, 5, 8])
            arguments["num_fewshot"] = shots
            parts.append(pick(rng, f", {shots}-shot", f" with {shots} examples in the prompt",
                              f" giving it {shots} solved examples first", f" (num_fewshot {shots})"))
        else:
            arguments["wait"] = False
            parts.append(_no_wait(rng))
    extra = "".join(parts)
    text = pick(rng, f"Evaluate {said} on {words}{extra}.", f"what does {said} score on {words}{extra}?",
                f"Run {words} against {said}{extra}.", f"Check how {said} does on {words}{extra}.",
                f"Put {said} through {words}{extra}.", f"I need {words} numbers for {said}{extra}.",
                f"Test {said} on the {words} benchmark{extra}.")
    result = _eval_result(model, arguments["tasks"], rng)
    if arguments.get("wait") is False:
        result = {"job_id": result["job_id"], "status": "queued", "models": [model]}
        answer = f"The evaluation {result['job_id']} is queued; ask me for its status later."
    else:
        answer = f"{model}: " + "; ".join(f"{r['task']} {next(iter(r['scores'].values()))}" for r in result["results"])
    return Episode("evaluate", text, [Call("evaluate", arguments, obs(result), "Evaluate the model.")], answer)


def compare_options(rng: random.Random) -> Episode:
    episode = compare(rng)
    call = episode.calls[0]
    base, tuned = call.arguments["model_a"], call.arguments["model_b"]
    task_said, task = next((w, t) for w, t in TASK_WORDS if t == call.arguments["tasks"][0])
    base_said = pick(rng, base, "the base model", "the original", "smollm2") if base == EMBEDDED_MODEL_ID else base
    text = pick(rng, f"Is {tuned} any better than {base_said} at {task_said}?",
                f"{base_said} or {tuned}: which one wins on {task_said}?",
                f"Pit {tuned} against {base_said} on {task_said}.",
                f"Did fine-tuning pay off? Compare {tuned} to {base_said} using {task_said}.",
                f"How does {tuned} stack up against {base_said} on {task_said}?",
                f"run {task_said} on both {base_said} and {tuned} and tell me which is stronger")
    arguments = dict(call.arguments)
    if rng.random() < 0.3:
        limit = rng.choice([20, 30, 50, 100])
        arguments["limit"] = limit
        text += pick(rng, f" Use {limit} questions.", f" ({limit} samples each)", f" Only {limit} items.")
    return Episode("compare_models", text, [Call("compare_models", arguments, call.observation, call.thought)],
                   episode.answer)


def deploy_options(rng: random.Random) -> Episode:
    said, model = _model(rng) if rng.random() < 0.4 else (lambda t: (t, t))(_tuned_id("smollm2", rng))
    arguments: dict[str, Any] = {"model": model}
    parts = []
    for option in rng.sample(["engine", "keep_alive", "wait", "adapters"], rng.choice([1, 1, 2])):
        if option == "engine":
            engine = rng.choice(["vllm", "vllm", "embedded"])
            arguments["engine"] = engine
            parts.append(pick(rng, " on vLLM", " with vllm", " using the vLLM engine") if engine == "vllm" else
                         pick(rng, " on the embedded engine", " in-process (embedded)", " with the built-in engine"))
        elif option == "keep_alive":
            minutes = rng.choice([5, 10, 15, 30, 60])
            arguments["keep_alive"] = f"{minutes}m"
            parts.append(pick(rng, f", unloading it after {minutes} minutes idle", f" with a keep-alive of {minutes} minutes",
                              f"; free it when unused for {minutes} min", f" (drop it after {minutes} idle minutes)"))
        elif option == "wait":
            arguments["wait"] = False
            parts.append(pick(rng, " and return before it has loaded", ", don't wait for it to be ready",
                              " without waiting for the load", "; answer me right away, it can load meanwhile",
                              " and reply at once rather than waiting", ", no need to wait until it's up"))
        elif not model.startswith("ft:"):
            adapter = _tuned_id("smollm2", rng)
            arguments["adapters"] = [adapter]
            parts.append(pick(rng, f" with {adapter} loaded as an adapter", f" plus the LoRA {adapter} on top",
                              f", serving the adapter {adapter} with it"))
    extra = "".join(parts)
    text = pick(rng, f"Deploy {said}{extra}.", f"Get {said} running as a service{extra}.",
                f"host {said}{extra}", f"I want to chat with {said}; serve it{extra}.",
                f"Bring {said} up{extra}.", f"Launch {said} for serving{extra}.")
    result = _deployed(model, rng, arguments.get("engine", "embedded"))
    if arguments.get("wait") is False:
        result["status"] = "loading"
    return Episode("deploy", text, [Call("deploy", arguments, obs(result), "Deploy the model.")],
                   f"{result['model']} is {result['status']} ({result['engine']}); use model={result['model']!r}.")


def undeploy_words(rng: random.Random) -> Episode:
    tuned = _tuned_id("smollm2", rng)
    deployment = f"dep-{hexid(rng, 12)}"
    target = rng.choice([tuned, deployment])
    text = pick(rng, f"Unload {target}.", f"{target} can go, undeploy it.", f"We're finished with {target}; remove it.",
                f"Stop the deployment {target}.", f"please bring {target} down", f"Tear down {target}.",
                f"No more serving {target}, thanks.")
    result = {"deployment_id": deployment, "model": tuned, "engine": "embedded", "status": "stopped"}
    return Episode("undeploy", text, [Call("undeploy", {"deployment": target}, obs(result), "Undeploy it.")],
                   f"{tuned} is no longer served (deployment {deployment} stopped).")


def listings(rng: random.Random) -> Episode:
    if rng.random() < 0.5:
        include = rng.random() < 0.4
        listed = [_deployed(_tuned_id("smollm2", rng), rng) for _ in range(rng.randint(0, 2))]
        text = pick(rng, "Including stopped ones, which deployments have there been?",
                    "list every deployment, stopped ones too", "Show the deployment history, finished ones included.") \
            if include else pick(rng, "What's being served now?", "Which endpoints are up?", "any models online?",
                                 "Tell me which deployments are live.", "what am I hosting right now")
        answer = ("Deployments: " + ", ".join(f"{d['model']} ({d['status']})" for d in listed) + ".") if listed else \
            "No deployments."
        return Episode("list_deployments", text, [Call("list_deployments", {"include_stopped": True} if include else {},
                                                       obs(listed), "List deployments.")], answer)
    rows = [(EMBEDDED_MODEL_ID, "arc_easy", "0.4100 ± 0.0200"), (_tuned_id("smollm2", rng), "support_qa", "0.8000 ± 0.0500")]
    table = "| model | task | score |\n|---|---|---|\n" + "\n".join(f"| {m} | {t} | {s} |" for m, t, s in rows)
    text = pick(rng, "Who's on top of the leaderboard?", "rank all the models by their scores",
                "Show the best-scoring models.", "what are the standings across evaluations?",
                "Display the evaluation ranking.")
    return Episode("leaderboard", text, [Call("leaderboard", {}, table, "Show the leaderboard.")], table)
