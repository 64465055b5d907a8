"""Requests that need two calls in the order the user gives, the second built on the first's
result (a job id, a model id, face boxes, a height). The first adapter stopped after any first
result; these teach it that "then …" is still to do."""

from __future__ import annotations

import random

from agentd.tool_use.media_scenarios import _made, _picture
from agentd.tool_use.model_scenarios import (TASK_WORDS, _data, _deployed, _eval_result, _finetune_result, _model,
                                             _tuned_id)
from agentd.tool_use.scenarios import Call, Episode, _calculated, _fmt, obs, pick

THEN = [", then ", "; after that ", " and then ", ". Next, ", ", and once that's done "]


def chain(rng: random.Random) -> Episode:
    return rng.choice([_evaluate_then_finetune, _finetune_nowait_then_status, _deploy_then_list, _faces_then_draw,
                       _stats_then_resize, _finetune_then_compare, _calculate_then_python])(rng)


def _evaluate_then_finetune(rng: random.Random) -> Episode:
    said, model = _model(rng)
    task_said, task = rng.choice(TASK_WORDS)
    data = _data(rng)
    text = pick(rng, f"Score {said} on {task_said} first{rng.choice(THEN)}train it on {data}.",
                f"Get a {task_said} baseline for {said}{rng.choice(THEN)}fine-tune it with {data}.",
                f"Before tuning {said} on {data}, measure it on {task_said}.")
    evaluation = _eval_result(model, [task], rng)
    tuned = _tuned_id(model, rng)
    tuning = _finetune_result(model, tuned, rng)
    score = next(iter(evaluation["results"][0]["scores"].values()))
    calls = [Call("evaluate", {"model": model, "tasks": [task]}, obs(evaluation), "Evaluate it first."),
             Call("finetune", {"model": model, "training_file": data}, obs(tuning), "Now fine-tune it.")]
    return Episode("chain/evaluate_finetune", text, calls,
                   f"Before tuning, {model} scored {score} on {task}; the fine-tuned model is {tuned}.")


def _finetune_nowait_then_status(rng: random.Random) -> Episode:
    said, model = _model(rng)
    data = _data(rng)
    text = pick(rng, f"Kick off training of {said} on {data} in the background{rng.choice(THEN)}tell me how it is doing.",
                f"Start fine-tuning {said} with {data} without waiting{rng.choice(THEN)}check its status.",
                f"Launch a {said} fine-tune on {data}, don't block{rng.choice(THEN)}look at the job.")
    started = _finetune_result(model, _tuned_id(model, rng), rng)
    job = started["job_id"]
    queued = {"job_id": job, "kind": "fine_tune", "status": "queued", "model": model}
    running = {"job_id": job, "kind": "fine_tune", "status": "running", "model": model,
               "progress": {"step": rng.randint(1, 20), "total_steps": rng.randint(30, 90), "loss": round(rng.uniform(0.5, 2), 4)}}
    calls = [Call("finetune", {"model": model, "training_file": data, "wait": False}, obs(queued), "Start it, no waiting."),
             Call("job_status", {"job_id": job}, obs(running), f"Check the job {job}.", {"job_id": "#E1.job_id"})]
    progress = running["progress"]
    return Episode("chain/finetune_status", text, calls,
                   f"{job} is running: step {progress['step']} of {progress['total_steps']}, loss {progress['loss']}.")


def _deploy_then_list(rng: random.Random) -> Episode:
    tuned = _tuned_id("smollm2", rng)
    text = pick(rng, f"Serve {tuned}{rng.choice(THEN)}show me everything that is deployed.",
                f"Bring {tuned} online and afterwards list the running deployments.",
                f"deploy {tuned}{rng.choice(THEN)}what's being served?")
    made = _deployed(tuned, rng)
    listed = [_deployed(_tuned_id("smollm2", rng), rng), made][rng.randint(0, 1):]
    calls = [Call("deploy", {"model": tuned}, obs(made), "Deploy it first."),
             Call("list_deployments", {}, obs(listed), "Now list the deployments.")]
    return Episode("chain/deploy_list", text, calls,
                   "Deployed. Now serving: " + ", ".join(d["model"] for d in listed) + ".")


def _faces_then_draw(rng: random.Random) -> Episode:
    said, fid = _picture(rng)
    boxes = [{"x": rng.randint(0, 400), "y": rng.randint(0, 300), "width": w, "height": w}
             for w in rng.sample(range(60, 160), rng.randint(1, 3))]
    _, image = _made(rng, 640, 480)
    found = obs({"faces": len(boxes), "boxes": boxes, "image": {"width": 640, "height": 480}}) + "\n" + image
    text = pick(rng, f"Detect the faces in {said}{rng.choice(THEN)}mark them with rectangles.",
                f"Locate every face in {said} and outline each one on the image.",
                f"find faces in {said}{rng.choice(THEN)}draw their boxes")
    framed, drawn = _made(rng, 640, 480)
    calls = [Call("detect_faces", {"image": fid}, found, "Find the faces first."),
             Call("draw_boxes", {"image": fid, "boxes": boxes}, drawn, "Draw the boxes it found.")]
    return Episode("chain/faces_draw", text, calls, f"{len(boxes)} face(s) marked: {framed}.", plannable=False)


def _stats_then_resize(rng: random.Random) -> Episode:
    said, fid = _picture(rng)
    w, h = rng.choice([(640, 480), (800, 600), (1024, 768), (320, 240), (1200, 900)])
    by_width = rng.random() < 0.5
    factor, words = rng.choice([(2, "half"), (4, "a quarter"), (3, "a third")])
    text = pick(rng, f"Check how {'wide' if by_width else 'high'} {said} is{rng.choice(THEN)}scale it to {words} of that.",
                f"Find the {'width' if by_width else 'height'} of {said} and resize it to {words} of it.")
    stats = obs({"width": w, "height": h, "mode": "RGB", "format": "image/png", "pixels": w * h})
    size = (w if by_width else h) // factor
    made, result = _made(rng, size if by_width else w * size // h, h * size // w if by_width else size)
    calls = [Call("image_stats", {"image": fid}, stats, "Measure it first."),
             Call("resize_image", {"image": fid, ("width" if by_width else "height"): size}, result,
                  f"Resize to {size}.")]
    return Episode("chain/stats_resize", text, calls, f"It was {w}x{h}; resized: {made}.", plannable=False)


def _finetune_then_compare(rng: random.Random) -> Episode:
    said, model = _model(rng)
    data = _data(rng)
    task_said, task = rng.choice(TASK_WORDS)
    tuned = _tuned_id(model, rng)
    tuning = _finetune_result(model, tuned, rng)
    text = pick(rng, f"Train {said} on {data}{rng.choice(THEN)}put the new model against {said} on {task_said}.",
                f"Fine-tune {said} with {data} and compare the result to the original on {task_said}.")
    a, b = round(rng.uniform(0.1, 0.6), 4), round(rng.uniform(0.2, 0.9), 4)
    better = tuned if b > a else model
    compared = {"model_a": model, "model_b": tuned, "comparisons": [
        {"task": task, "metric": "acc", "a": a, "b": b, "difference": round(b - a, 4), "better": better}]}
    calls = [Call("finetune", {"model": model, "training_file": data}, obs(tuning), "Fine-tune first."),
             Call("compare_models", {"model_a": model, "model_b": tuned, "tasks": [task]}, obs(compared),
                  f"Compare with {tuned}.", {"model_a": model, "model_b": "#E1.fine_tuned_model", "tasks": [task]})]
    return Episode("chain/finetune_compare", text, calls, f"On {task}: {model} {a}, {tuned} {b}; {better} is better.")


def _calculate_then_python(rng: random.Random) -> Episode:
    a, b = rng.randint(3, 40), rng.randint(3, 40)
    product = a * b
    digits = str(product)
    text = pick(rng, f"Multiply {a} by {b}{rng.choice(THEN)}use Python to print the digits of the result backwards.",
                f"compute {a} x {b} and then, with code, reverse that number's digits")
    code = f"print(str({product})[::-1])"
    calls = [Call("calculator", {"expression": f"{a} * {b}"}, _calculated(f"{a} * {b}"), "Compute the product first."),
             Call("python", {"code": code}, obs([f"stdout:\n{digits[::-1]}"]), f"Reverse {_fmt(product)} in Python.")]
    return Episode("chain/calculate_python", text, calls, f"{a} * {b} = {product}; reversed: {digits[::-1]}.",
                   plannable=False)


def composed(rng: random.Random) -> Episode:
    """Two requests said as one ("…, then …"), each part needing its own call, in the order given.

    The hand-written chains above cover seven pairs of tools; a user chains any two. Joining two
    single-call episodes of any kinds teaches the general rule the chains only show by example: after
    the first result, what the request still asks for is still to do, whichever tools the parts need."""
    first = _single_call(rng)
    second = _single_call(rng)
    joined = first.request.rstrip(" .?!") + rng.choice(THEN) + _continued(second.request)
    return Episode("chain/composed", joined, first.calls + second.calls, f"{first.answer} {second.answer}",
                   plannable=first.plannable and second.plannable)


def _single_call(rng: random.Random) -> Episode:
    from agentd.tool_use import media_scenarios as media
    from agentd.tool_use import model_scenarios as models
    from agentd.tool_use import option_scenarios as options
    from agentd.tool_use import scenarios as basic

    makers = [basic.arithmetic, basic.python_task, basic.python_instruction, basic.knowledge, models.finetune,
              options.finetune_options, models.evaluate, options.evaluate_options, models.compare, models.deploy,
              options.deploy_options, models.undeploy, models.list_deployments, options.listings,
              models.job_status_episode, models.list_jobs_episode, models.leaderboard, models.workflow, media.vision,
              media.text_to_image]
    while True:
        episode = rng.choice(makers)(rng)
        if len(episode.calls) == 1 and episode.before is None and not episode.extra_tools and not episode.calls[0].wrong:
            return episode


def _continued(request: str) -> str:
    """A request as the second half of a sentence: its first word lower-cased unless it is a name."""
    word, _, rest = request.partition(" ")
    plain = word[:1].isupper() and word[1:] == word[1:].lower() and word != "I"
    return (word.lower() if plain else word) + (" " + rest if rest else "")
