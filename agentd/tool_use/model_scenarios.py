"""Episodes over a model's life: fine-tune, evaluate, compare, deploy, the jobs behind them, and
the tune-and-evaluate workflow, with the job summaries the real tools return."""

from __future__ import annotations

import random

from agentd.jobs.fine_tune import fine_tuned_model_id, parse_model_id
from agentd.tool_use.scenarios import Call, Episode, file_id, hexid, obs, pick
from pipelines.embedded import EMBEDDED_MODEL_ID

# How a user names a model → the argument the agent passes (the tools resolve short names).
MODEL_WORDS = [("smollm2", "smollm2"), ("SmolLM2", "SmolLM2"), ("the small model", EMBEDDED_MODEL_ID),
               ("the base model", EMBEDDED_MODEL_ID), (EMBEDDED_MODEL_ID, EMBEDDED_MODEL_ID),
               ("the embedded model", EMBEDDED_MODEL_ID), ("smollm2-135m", "smollm2-135m"),
               ("qwen-0.5b", "qwen-0.5b"), ("my-llama", "my-llama")]
# How a user names a task → the built-in task name.
TASK_WORDS = [("ARC easy", "arc_easy"), ("arc-challenge", "arc_challenge"), ("HellaSwag", "hellaswag"),
              ("PIQA", "piqa"), ("BoolQ", "boolq"), ("SciQ", "sciq"), ("MMLU", "mmlu_subset"),
              ("OpenBookQA", "openbookqa"), ("winogrande", "winogrande"), ("support_qa", "support_qa"),
              ("the support questions", "support_qa"), ("the arithmetic task", "arithmetic")]
DATA_FILES = ["examples/support_tickets.jsonl", "data/tickets.jsonl", "train.jsonl", "chats/support.jsonl",
              "my_faq.jsonl"]


def _model(rng: random.Random) -> tuple[str, str]:
    return rng.choice(MODEL_WORDS)


def _data(rng: random.Random) -> str:
    return file_id(rng) if rng.random() < 0.5 else rng.choice(DATA_FILES)


def _tuned_id(base: str, rng: random.Random) -> str:
    resolved = EMBEDDED_MODEL_ID if base.lower().startswith("smollm2") else base
    return fine_tuned_model_id(resolved, f"ftjob-{hexid(rng, 8)}", None)


def _job_of(tuned: str, rng: random.Random) -> str:
    """The fine-tune job that made `tuned`: as the real service names them, the model id ends with the job
    id's first 8 hex digits. Runs must show the shared prefix, or the model learns to copy a model id
    on into the job id's tail (seen with the first adapter: `ft:...::6a930f57479074c9a8703ab2`)."""
    return f"{parse_model_id(tuned)[0]}{hexid(rng, 16)}"


def _finetune_result(base: str, tuned: str, rng: random.Random) -> dict:
    return {"job_id": _job_of(tuned, rng), "kind": "fine_tune", "status": "succeeded", "model": base,
            "fine_tuned_model": tuned, "final_loss": round(rng.uniform(0.02, 0.9), 4), "steps": rng.randint(20, 400)}


def _score(rng: random.Random, low: float = 0.05, high: float = 0.95) -> tuple[float, str]:
    value = rng.uniform(low, high)
    return value, f"{value:.4f} ± {rng.uniform(0.005, 0.06):.4f}"


def finetune(rng: random.Random) -> Episode:
    said, model = _model(rng)
    data = _data(rng)
    arguments = {"model": model, "training_file": data}
    extra = ""
    if rng.random() < 0.25:
        epochs = rng.choice([1, 2, 3, 5])
        arguments["epochs"] = epochs
        extra = pick(rng, f" for {epochs} epochs", f", {epochs} passes over the data")
    if rng.random() < 0.15:
        arguments = {"model": model, "training_file": data, "method": "full", **({"epochs": arguments["epochs"]}
                                                                                  if "epochs" in arguments else {})}
        extra += " (full fine-tune, all weights)"
    text = pick(rng, f"Train {said} on {data}{extra}.", f"Teach {said} the examples in {data}{extra}",
                f"LoRA-tune {said} with {data}{extra}", f"can you adapt {said} to my data in {data}{extra}?",
                f"Start a fine-tuning run of {said} on {data}{extra}.", f"customise {said} using {data}{extra}")
    tuned = _tuned_id(model, rng)
    result = _finetune_result(model, tuned, rng)
    answer = pick(rng, f"Done: the fine-tuned model is {tuned} (final loss {result['final_loss']}).",
                  f"Training finished. Chat with the new model as {tuned}.",
                  f"The job {result['job_id']} succeeded; the new model id is {tuned}.")
    return Episode("finetune", text, [Call("finetune", arguments, obs(result), "Fine-tune the model.")], answer)


def _eval_result(model: str, tasks: list[str], rng: random.Random) -> dict:
    results = []
    for task in tasks:
        metric = "f1" if task == "support_qa" else "acc"
        results.append({"model": model, "task": task, "samples": rng.choice([48, 100, 200, 500]), "unparsed": 0,
                        "scores": {metric: _score(rng)[1]}})
    return {"job_id": f"evaljob-{hexid(rng)}", "status": "succeeded", "models": [model], "results": results}


def evaluate(rng: random.Random) -> Episode:
    said, model = _model(rng) if rng.random() < 0.6 else (lambda t: (t, t))(_tuned_id("smollm2", rng))
    picked = rng.sample(TASK_WORDS, rng.choice([1, 1, 2]))
    words, tasks = " and ".join(w for w, _ in picked), [t for _, t in picked]
    arguments = {"model": model, "tasks": tasks}
    extra = ""
    if rng.random() < 0.3:
        limit = rng.choice([20, 50, 100])
        arguments["limit"] = limit
        extra = pick(rng, f" (only {limit} samples)", f", first {limit} questions only")
    text = pick(rng, f"How well does {said} do on {words}{extra}?", f"Benchmark {said} on {words}{extra}.",
                f"score {said} against {words}{extra}", f"Run the {words} eval on {said}{extra}",
                f"Measure the accuracy of {said} on {words}{extra}.")
    result = _eval_result(model, tasks, rng)
    scores = "; ".join(f"{r['task']}: {next(iter(r['scores']))} {next(iter(r['scores'].values()))}"
                       for r in result["results"])
    return Episode("evaluate", text, [Call("evaluate", arguments, obs(result), "Evaluate the model.")],
                   f"{model} scored {scores}.")


def compare(rng: random.Random) -> Episode:
    base_said, base = _model(rng)
    tuned = _tuned_id(base, rng)
    task_said, task = rng.choice(TASK_WORDS)
    text = pick(rng, f"Which is better on {task_said}: {base_said} or {tuned}?",
                f"Compare {tuned} with {base_said} on {task_said}.",
                f"Did {tuned} improve over {base_said}? Check with {task_said}.",
                f"head to head, {base_said} vs {tuned}, on {task_said}")
    (a, _), (b, _) = _score(rng), _score(rng)
    metric = "f1" if task == "support_qa" else "acc"
    better = base if a > b else tuned
    result = {"job_id": f"evaljob-{hexid(rng)}", "model_a": base, "model_b": tuned, "comparisons": [
        {"task": task, "metric": metric, "a": round(a, 4), "b": round(b, 4), "difference": round(b - a, 4),
         "better": better, "significant": abs(a - b) > 0.1}]}
    answer = (f"On {task}, {base} scored {metric} {a:.4f} and {tuned} {b:.4f}: {better} is better"
              f"{'' if abs(a - b) > 0.1 else ', but the difference is within noise'}.")
    return Episode("compare_models", text, [Call("compare_models", {"model_a": base, "model_b": tuned, "tasks": [task]},
                                                 obs(result), "Compare the two models.")], answer)


def _deployed(model: str, rng: random.Random, engine: str = "embedded") -> dict:
    served = model if model.startswith("ft:") or model == EMBEDDED_MODEL_ID else f"{model}-{hexid(rng, 4)}"
    return {"deployment_id": f"dep-{hexid(rng, 12)}", "model": served, "engine": engine, "status": "ready",
            "memory_mb": round(rng.uniform(250, 2000), 1), "chat_with": f"send requests with model={served!r}"}


def deploy(rng: random.Random) -> Episode:
    said, model = _model(rng) if rng.random() < 0.5 else (lambda t: (t, t))(_tuned_id("smollm2", rng))
    arguments = {"model": model}
    extra = ""
    if rng.random() < 0.3:
        arguments["engine"] = "vllm"
        extra = pick(rng, " on vLLM", " with the vllm engine")
    text = pick(rng, f"Serve {said}{extra} so I can chat with it.", f"Put {said} online{extra}.",
                f"deploy {said}{extra}", f"Make {said} available as an endpoint{extra}.",
                f"Spin up {said}{extra} for me.")
    result = _deployed(model, rng, arguments.get("engine", "embedded"))
    return Episode("deploy", text, [Call("deploy", arguments, obs(result), "Deploy the model.")],
                   f"{result['model']} is deployed ({result['engine']}, {result['status']}); "
                   f"use model={result['model']!r} to chat with it.")


def undeploy(rng: random.Random) -> Episode:
    target = rng.choice([f"dep-{hexid(rng, 12)}", _tuned_id("smollm2", rng)])
    text = pick(rng, f"Stop serving {target}.", f"Take {target} offline.", f"shut down {target}, it's not needed",
                f"Free the memory used by {target}.")
    result = {"deployment_id": target if target.startswith("dep-") else f"dep-{hexid(rng, 12)}",
              "model": target if target.startswith("ft:") else _tuned_id("smollm2", rng), "engine": "embedded",
              "status": "stopped"}
    return Episode("undeploy", text, [Call("undeploy", {"deployment": target}, obs(result), "Undeploy it.")],
                   f"{result['model']} is no longer served (deployment {result['deployment_id']} stopped).")


def list_deployments(rng: random.Random) -> Episode:
    listed = [_deployed(_tuned_id("smollm2", rng), rng) for _ in range(rng.randint(0, 2))]
    text = pick(rng, "Which models are being served right now?", "show me what's deployed",
                "Are any deployments running?", "List the live endpoints.")
    answer = ("Running: " + ", ".join(f"{d['model']} ({d['status']})" for d in listed) + ".") if listed else \
        "Nothing is deployed right now."
    return Episode("list_deployments", text, [Call("list_deployments", {}, obs(listed), "List deployments.")], answer)


def jobs(rng: random.Random) -> Episode:
    return job_status_episode(rng) if rng.random() < 0.5 else list_jobs_episode(rng)


def job_status_episode(rng: random.Random) -> Episode:
    evaluation = rng.random() < 0.3
    job = f"{'evaljob' if evaluation else 'ftjob'}-{hexid(rng)}"
    status = rng.choice(["running", "succeeded", "failed", "queued"])
    result = {"job_id": job, "kind": "evaluation" if evaluation else "fine_tune", "status": status,
              "model": EMBEDDED_MODEL_ID}
    if status == "running":
        result["progress"] = {"step": rng.randint(1, 90), "total_steps": 100, "loss": round(rng.uniform(0.1, 2), 4)}
    if status == "succeeded" and evaluation:
        result["results"] = [{"task": "arc_easy", "scores": {"acc": _score(rng)[1]}}]
    elif status == "succeeded":
        result.update(fine_tuned_model=fine_tuned_model_id(EMBEDDED_MODEL_ID, job, None), final_loss=0.12, steps=100)
    if status == "failed":
        result["error"] = pick(rng, "the training file has no examples", "out of memory at step 3",
                               "the model could not be loaded")
    run = "evaluation" if evaluation else pick(rng, "training job", "fine-tune", "tuning run")
    text = pick(rng, f"Is {job} done yet?", f"What's the state of {job}?", f"how far along is {job}",
                f"check on job {job}", f"Any news on my {run} {job}?", f"did {job} succeed?",
                f"Give me the progress of {run} {job}.", f"{job} - finished or still going?",
                f"Where is {job} at right now?", f"status update for {job} please")
    detail = {"running": f"running, step {result.get('progress', {}).get('step')} of 100",
              "succeeded": f"finished: the new model is {result.get('fine_tuned_model')}" if not evaluation
              else f"finished: arc_easy acc {result.get('results', [{}])[0].get('scores', {}).get('acc')}",
              "failed": f"failed: {result.get('error')}", "queued": "queued, waiting to start"}[status]
    return Episode("job_status", text, [Call("job_status", {"job_id": job}, obs(result), "Check the job.")],
                   f"{job} is {detail}.")


def list_jobs_episode(rng: random.Random) -> Episode:
    arguments: dict = {}
    text = pick(rng, "What training runs have I started?", "list my fine-tuning jobs", "Show recent tuning jobs.",
                "Which jobs are there?", "give me an overview of all my jobs", "What have you been training lately?",
                "Any evaluations or fine-tunes in the queue?")
    statuses = rng.sample(["succeeded", "running", "failed", "queued"], 2)
    roll = rng.random()
    if roll < 0.3:
        status = rng.choice(["failed", "running", "succeeded", "queued"])
        arguments["status"] = status
        statuses = [status, status]
        text = pick(rng, f"Which of my jobs are {status}?", f"list the {status} jobs", f"Show only {status} jobs.",
                    f"Did any job end up {status}?" if status in ("failed", "succeeded") else f"what is {status} now?")
    elif roll < 0.5:
        limit = rng.choice([1, 2, 3, 5, 10])
        arguments["limit"] = limit
        text = pick(rng, f"List my last {limit} jobs.", f"the {limit} newest jobs, please",
                    f"What were my {limit} latest runs?")
    listed = [{"job_id": f"ftjob-{hexid(rng)}", "kind": "fine_tune", "status": s, "model": EMBEDDED_MODEL_ID}
              for s in statuses[:arguments.get("limit", 2)]]
    return Episode("list_jobs", text, [Call("list_jobs", arguments, obs(listed), "List the jobs.")],
                   "Jobs: " + ", ".join(f"{j['job_id']} ({j['status']})" for j in listed) + ".")


def leaderboard(rng: random.Random) -> Episode:
    rows = [(EMBEDDED_MODEL_ID, "arc_easy", _score(rng)[1]), (_tuned_id("smollm2", rng), "support_qa", _score(rng)[1])]
    table = "| model | task | score |\n|---|---|---|\n" + "\n".join(f"| {m} | {t} | {s} |" for m, t, s in rows)
    text = pick(rng, "Show the scoreboard of every model evaluated so far.", "which model ranks best overall?",
                "Print the results table for all evaluations.")
    return Episode("leaderboard", text, [Call("leaderboard", {}, table, "Show the leaderboard.")], table)


def _workflow_result(model: str, data: str, tasks: list[str] | None, deploy_better: bool,
                     rng: random.Random) -> tuple[dict, str]:
    base = EMBEDDED_MODEL_ID if model.lower().startswith("smollm2") or model == EMBEDDED_MODEL_ID else model
    tuned = _tuned_id(base, rng)
    shown = tasks or ["held-out"]
    rows, better_votes = [], 0
    for task in shown:
        metric = "f1" if task in ("support_qa", "held-out") else "acc"
        (a, a_text), (b, b_text) = _score(rng, 0.02, 0.5), _score(rng, 0.1, 0.98)
        better_votes += b > a
        rows.append((task, metric, a, a_text, b, b_text))
    better = tuned if better_votes * 2 >= len(rows) else base
    headline = rows[0]
    summary = (f"{better} is better than {base if better == tuned else tuned} on {headline[0]}: "
               f"{headline[1]} {max(headline[2], headline[4]):.2f} vs {min(headline[2], headline[4]):.2f}.")
    table = (f"| task | metric | {base} | {tuned} |\n|---|---|---|---|\n"
             + "\n".join(f"| {t} | {m} | {at} | {bt} |" for t, m, _, at, _, bt in rows))
    result = {"base_model": base, "tuned_model": tuned, "better": better, "summary": summary, "table": table,
              "fine_tune_job": _job_of(tuned, rng), "evaluation_job": f"evaljob-{hexid(rng)}",
              "deployed": _deployed(better, rng) if deploy_better else None}
    return result, f"{summary}\n\n{table}"


def workflow(rng: random.Random) -> Episode:
    said, model = _model(rng)
    data = _data(rng)
    with_tasks = rng.random() < 0.65
    picked = rng.sample(TASK_WORDS, rng.choice([1, 1, 2])) if with_tasks else []
    words, tasks = " and ".join(w for w, _ in picked), [t for _, t in picked] or None
    limit = rng.choice([5, 8, 10, 12, 20, 25, 40, 50]) if tasks and rng.random() < 0.35 else None
    scope = pick(rng, f"the first {limit} questions of {words}", f"{limit} samples of {words}",
                 f"{words} ({limit} questions each)", f"{words}, {limit} items only") if limit else words
    lora = pick(rng, " with LoRA", " using LoRA", " (LoRA)", " with a LoRA adapter") if rng.random() < 0.3 else ""
    deploy_better = rng.random() < 0.25
    then_deploy = pick(rng, ", and deploy whichever wins", ", then serve the better one", "; deploy the winner") \
        if deploy_better else ""
    if tasks:
        # Naming both models ("the base and the tuned one") is this one tool, not a fine-tune and one evaluation.
        text = pick(rng, f"Fine-tune {said} on {data}{lora}, then score the original and the tuned one on {scope} and "
                         f"tell me which wins{then_deploy}.",
                    f"Train {said} with {data}{lora} and check on {scope} whether it beats the original{then_deploy}.",
                    f"I want {said} tuned on {data}{lora} and compared with the base on {scope}{then_deploy}.",
                    f"tune {said} using {data}; evaluate before vs after on {scope}{then_deploy}",
                    f"Fine-tune {said} on {data}{lora}, evaluate the base model and the tuned one on {scope}, and "
                    f"report which one wins{then_deploy}.",
                    f"Fine-tune {said} on {data}{lora}. Then run {scope} on both the base and the fine-tuned model "
                    f"and say which is better{then_deploy}.",
                    f"Please tune {said} on {data}{lora}, then benchmark the untuned and the tuned versions on "
                    f"{scope} and tell me the better one{then_deploy}.",
                    f"fine-tune {said} with {data}{lora} and evaluate base vs tuned on {scope}{then_deploy}",
                    f"After fine-tuning {said} on {data}{lora}, evaluate the original model and the new one on "
                    f"{scope}; which is better?{then_deploy}")
    else:
        text = pick(rng, f"Fine-tune {said} on {data} and tell me if it got better{then_deploy}.",
                    f"Train {said} on my data {data}; did it improve?{then_deploy}",
                    f"adapt {said} to {data} and let me know whether the tuned model is any better{then_deploy}",
                    f"Does tuning {said} on {data} help? Try it{then_deploy}.",
                    f"Fine-tune {said}{lora} on {data}, then evaluate it against the base model and tell me which "
                    f"is better{then_deploy}.")
    arguments: dict = {"model": model, "training_file": data}
    if tasks:
        arguments["tasks"] = tasks
    if limit:
        arguments["limit"] = limit
    if deploy_better:
        arguments["deploy_better"] = True
    result, answer = _workflow_result(model, data, tasks, deploy_better, rng)
    if deploy_better:
        answer += f"\n\nDeployed {result['deployed']['model']}."
    episode = Episode("tune_and_evaluate", text, [Call("tune_and_evaluate", arguments, obs(result),
                                                       "Fine-tune, evaluate both, compare.")], answer)
    return episode


def workflow_then_deploy(rng: random.Random) -> Episode:
    """The follow-up in the same thread: deploy the model the earlier comparison named as better."""
    first = workflow(rng)
    while first.calls[0].arguments.get("deploy_better"):
        first = workflow(rng)
    better = next(value for key, value in _loads(first.calls[0].observation).items() if key == "better")
    text = pick(rng, "Now deploy the better one.", "ok, serve the winner", "Great, put the better model online.",
                "deploy whichever model won")
    result = _deployed(better, rng)
    return Episode("deploy_better", text, [Call("deploy", {"model": better}, obs(result), "Deploy the better model.")],
                   f"{result['model']} is deployed and ready: use model={result['model']!r}.", before=first)


def finetune_then(rng: random.Random) -> Episode:
    """Later arguments come from an earlier observation: the new model's id."""
    said, model = _model(rng)
    data = _data(rng)
    tuned = _tuned_id(model, rng)
    fine = _finetune_result(model, tuned, rng)
    if rng.random() < 0.5:
        task_said, task = rng.choice(TASK_WORDS)
        text = pick(rng, f"Fine-tune {said} on {data}, and after that evaluate the new model on {task_said}.",
                    f"Train {said} with {data} and afterwards benchmark the result on {task_said}.")
        result = _eval_result(tuned, [task], rng)
        score = next(iter(result["results"][0]["scores"].items()))
        second = Call("evaluate", {"model": tuned, "tasks": [task]}, obs(result),
                      f"Evaluate the new model {tuned}.", {"model": "#E1.fine_tuned_model", "tasks": [task]})
        answer = f"Fine-tuned {tuned}; on {task} it scored {score[0]} {score[1]}."
    else:
        text = pick(rng, f"Fine-tune {said} on {data} and deploy the resulting model.",
                    f"train {said} on {data}, then put the tuned model online")
        result = _deployed(tuned, rng)
        second = Call("deploy", {"model": tuned}, obs(result), f"Deploy the new model {tuned}.",
                      {"model": "#E1.fine_tuned_model"})
        answer = f"Fine-tuned and deployed {tuned}; chat with it as model={tuned!r}."
    first = Call("finetune", {"model": model, "training_file": data}, obs(fine), "Fine-tune first.")
    return Episode("finetune_chain", text, [first, second], answer)


def _loads(text: str) -> dict:
    import json

    return json.loads(text)
