"""Pictures in and out of agent runs: file ids chained between tools, artifact URLs, links in the
answer, file arguments constrained to known ids, and a named tool_choice.

Graph logic with a scripted model and real tools and stores; then end to end with the embedded
model through the openai client.
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
from pathlib import Path

import httpx
import pytest
from PIL import Image as PILImage

from agentd.agents.context import FINAL_ANSWER
from agentd.agents.files import RunFiles, link_artifacts, with_file_choices
from agentd.agents.rewoo import plan_schema
from agentd.agents.runs import RunStore
from agentd.agents.runtime import AgentLimits, AgentRuntime
from agentd.agents.steps import FinalAnswer, Observation, Retry, ToolCallStep
from agentd.config import Settings
from agentd.llm.chat_model import step_schema
from agentd.server.app import create_app
from tests.conftest import RunningServer
from tests.fixtures.image_tools import image_size, invert_image, paint
from tests.fixtures.scripted_model import ScriptedChatModel, answer, calls
from tools import FileStore, FunctionTool, Image, ToolRegistry
from tools.builtin.calculator import calculator
from tools.builtin.vision import detect_edges, draw_boxes

BASE = "http://agentd.test/v1"
IMAGE_TOOLS = Path(__file__).parent / "fixtures" / "image_tools.py"


@pytest.fixture()
def tools(tmp_path) -> ToolRegistry:
    registry = ToolRegistry([paint, invert_image, image_size, calculator], file_store=FileStore(tmp_path / "files"))
    yield registry
    registry.close()


async def start(tools, tmp_path, agent, messages, llm, **options):
    runtime = AgentRuntime(tools, tmp_path / "state", limits=AgentLimits())
    await runtime.open()
    agent_run = await runtime.start(agent, messages, llm=llm, base_url=BASE, **options)
    steps = [step async for step in agent_run]
    return runtime, agent_run, steps


def picture_in_store(tools, color="green", size=(10, 4)) -> str:
    image = Image.from_pil(PILImage.new("RGB", size, color))
    return tools.context.file_store.put(image.data, "photo.png", "vision", image.mime_type).id


def image_parameter(definitions, name):
    tool = next(t for t in definitions if t["function"]["name"] == name)
    return tool["function"]["parameters"]["properties"]["image"]


def pixel(tools, file_id):
    return PILImage.open(io.BytesIO(tools.context.file_store.read(file_id))).convert("RGB").getpixel((0, 0))


async def test_react_chains_an_artifact_into_the_next_tool_and_links_both(tools, tmp_path):
    seen_choices = []

    def invert_what_was_painted(messages, definitions):
        painted = image_parameter(definitions, "invert_image")["enum"]
        seen_choices.append(painted)
        return calls(("invert_image", {"image": painted[0]}))

    llm = ScriptedChatModel(acts=[calls(("paint", {"width": 6, "height": 3, "color": "blue"})),
                                  invert_what_was_painted, answer("Here is the inverted picture.")])
    runtime, outcome, steps = await start(tools, tmp_path, "agentd-react",
                                          [{"role": "user", "content": "paint blue, then invert it"}], llm)
    painted, inverted = [s for s in steps if isinstance(s, Observation)]
    # Before the second step the only known id was the painted picture: the model could copy nothing else.
    assert seen_choices == [[painted.artifacts[0]["file_id"]]]
    # Before the run knew a picture, the tools taking one could not be called at all.
    assert llm.callable == [["calculator", "final_answer", "paint"], None, None]
    assert inverted.artifacts[0]["url"] == f"{BASE}/files/{inverted.artifacts[0]['file_id']}/content"
    assert (inverted.artifacts[0]["width"], inverted.artifacts[0]["height"]) == (6, 3)
    assert pixel(tools, inverted.artifacts[0]["file_id"]) == (255, 255, 0)  # blue inverted
    final = steps[-1]
    assert isinstance(final, FinalAnswer) and final.answer.startswith("Here is the inverted picture.")
    for observation, name in ((painted, "painted.png"), (inverted, "inverted.png")):
        assert f"![{name}]({observation.artifacts[0]['url']})" in final.answer
    stored = runtime.runs.get(outcome.id)
    assert stored["answer"] == final.answer
    assert stored["steps"][-2]["artifacts"][0]["url"] == inverted.artifacts[0]["url"]
    await runtime.close()


async def test_a_picture_named_by_its_bare_id_stays_a_choice_after_a_tool_made_another(tools, tmp_path):
    """Asked to find the face in file-… and crop it out, the embedded model could only crop the framed copy
    detect_faces made: a stored file named by its bare id was not a known id, the artifact was."""
    photo = picture_in_store(tools)
    data = tools.context.file_store.put(b'{"text": "a"}\n', "data.jsonl", "fine-tune", "application/jsonl").id
    offered = []

    def measure_the_original(messages, definitions):
        offered.append(image_parameter(definitions, "image_size")["enum"])
        return calls(("image_size", {"image": photo}))

    llm = ScriptedChatModel(acts=[calls(("invert_image", {"image": photo})), measure_the_original, answer("10 by 4")])
    messages = [{"role": "user", "content": f"Invert {photo}, then measure {photo} itself (not the data in {data}, "
                                            "nor file-000000000000 that does not exist)."}]
    runtime, outcome, steps = await start(tools, tmp_path, "agentd-react", messages, llm)
    inverted, measured = [s for s in steps if isinstance(s, Observation)]
    assert offered == [[inverted.artifacts[0]["file_id"], photo]]  # pictures only, newest first
    assert not measured.is_error and "10" in measured.content
    await runtime.close()


async def test_a_picture_sent_is_the_choice_and_a_named_tool_choice_forces_the_first_call(tools, tmp_path):
    photo = picture_in_store(tools)
    offered = []

    def measure(messages, definitions):
        offered.append(definitions)
        return calls(("image_size", {"image": image_parameter(definitions, "image_size")["enum"][0]}))

    llm = ScriptedChatModel(acts=[measure, lambda m, d: offered.append(d) or answer("10 by 4")])
    messages = [{"role": "user", "content": f"how big is it? [image {photo}]"}]
    runtime, outcome, steps = await start(tools, tmp_path, "agentd-react", messages, llm,
                                          tool_choice={"name": "image_size"})
    first, second = offered
    assert [t["function"]["name"] for t in first] == ["image_size"]  # forced: nothing else, not even final_answer
    assert image_parameter(first, "image_size")["enum"] == [photo]
    assert FINAL_ANSWER in second and len(second) == 5  # afterwards the model chooses freely
    observation = next(s for s in steps if isinstance(s, Observation))
    assert json.loads(observation.content) == {"width": 10, "height": 4} and outcome.answer == "10 by 4"
    assert runtime.runs.get(outcome.id)["tool_choice"] == {"type": "function", "function": {"name": "image_size"}}
    await runtime.close()


async def test_tool_choice_none_and_required(tools, tmp_path):
    offered = []
    llm = ScriptedChatModel(acts=[lambda m, d: offered.append(d) or answer("no tools needed")])
    runtime, outcome, _ = await start(tools, tmp_path, "agentd-react", [{"role": "user", "content": "hi"}], llm,
                                      tool_choice="none")
    assert offered == [[FINAL_ANSWER]] and outcome.answer == "no tools needed"
    assert runtime.runs.get(outcome.id)["tool_choice"] == "none"
    await runtime.close()

    offered.clear()
    llm = ScriptedChatModel(acts=[lambda m, d: offered.append(d) or calls(("calculator", {"expression": "1+1"})),
                                  lambda m, d: offered.append(d) or answer("2")])
    runtime, outcome, _ = await start(tools, tmp_path, "agentd-react", [{"role": "user", "content": "1+1"}], llm,
                                      tool_choice="required")
    assert FINAL_ANSWER not in offered[0] and FINAL_ANSWER in offered[1] and outcome.answer == "2"
    await runtime.close()

    # ReWOO with "none" plans nothing: the solver answers at once.
    llm = ScriptedChatModel(chats=["plain answer"])
    runtime, outcome, _ = await start(tools, tmp_path, "agentd-rewoo", [{"role": "user", "content": "hi"}], llm,
                                      tool_choice="none")
    assert [kind for kind, _ in llm.seen] == ["chat"] and outcome.answer == "plain answer"
    await runtime.close()


async def test_rewoo_passes_the_file_a_step_made_to_a_later_step(tools, tmp_path):
    plan = {"steps": [
        {"thought": "paint", "tool": "paint", "arguments": {"width": 4, "height": 4, "color": "white"}},
        {"thought": "invert", "tool": "invert_image", "arguments": {"image": "#E1"}}]}
    llm = ScriptedChatModel(structured=[plan], acts=[answer("Inverted.")])
    photo = picture_in_store(tools)
    messages = [{"role": "user", "content": f"paint white and invert [image {photo}]"}]
    runtime, outcome, steps = await start(tools, tmp_path, "agentd-rewoo", messages, llm,
                                          tool_choice={"name": "paint"})
    inverted = [s for s in steps if isinstance(s, Observation)][1]
    assert not inverted.is_error and pixel(tools, inverted.artifacts[0]["file_id"]) == (0, 0, 0)
    assert f"![inverted.png]({inverted.artifacts[0]['url']})" in outcome.answer
    # The plan's first step is forced to paint; an image argument is a known id or a reference.
    assert llm.schemas[0]["properties"]["steps"]["prefixItems"] == [{"$ref": "#/$defs/step_paint"}]
    variant = llm.schemas[0]["$defs"]["step_invert_image"]
    choices = variant["properties"]["arguments"]["properties"]["image"]["anyOf"]
    assert choices[0]["enum"] == [photo]
    # A whole step (its file), of those a plan this long can have before another.
    assert re.fullmatch(choices[1]["pattern"], "#E1") and not re.fullmatch(choices[1]["pattern"], "#E1.size")
    assert not re.fullmatch(choices[1]["pattern"], "#E15")
    await runtime.close()


async def test_rewoo_passes_on_the_picture_a_step_that_made_none_looked_at(tools, tmp_path):
    """A second-stage adapter planned "measure it, then resize it" as image_stats, then resize_image of
    `#E1`: the measurement given as the picture. `it` is the picture measured; a sum is no picture at all."""
    photo = picture_in_store(tools)
    measured_then_inverted = {"steps": [
        {"thought": "measure", "tool": "image_size", "arguments": {"image": photo}},
        {"thought": "invert", "tool": "invert_image", "arguments": {"image": "#E1"}}]}
    summed_as_picture = {"steps": [
        {"thought": "add", "tool": "calculator", "arguments": {"expression": "2 + 2"}},
        {"thought": "invert", "tool": "invert_image", "arguments": {"image": "#E1"}}]}
    llm = ScriptedChatModel(structured=[measured_then_inverted, summed_as_picture, measured_then_inverted],
                            chats=["Inverted.", "Inverted."])
    messages = [{"role": "user", "content": f"measure it and invert it [image {photo}]"}]
    runtime, outcome, steps = await start(tools, tmp_path, "agentd-rewoo", messages, llm)
    calls = [s for s in steps if isinstance(s, ToolCallStep)]
    assert calls[1].call.arguments == {"image": photo} and not any(isinstance(s, Retry) for s in steps)
    inverted = [s for s in steps if isinstance(s, Observation)][1]
    assert inverted.name == "invert_image" and not inverted.is_error
    assert pixel(tools, inverted.artifacts[0]["file_id"]) == (255, 127, 255)  # the green photo, inverted
    await runtime.close()

    runtime, outcome, steps = await start(tools, tmp_path / "again", "agentd-rewoo", messages, llm)
    retry = next(s for s in steps if isinstance(s, Retry))
    assert "passes #E1 as its image, but calculator makes no file" in retry.reason
    replanned = [messages for kind, messages in llm.seen if kind == "structured"][-1]
    assert "calculator makes no file" in replanned[-1]["content"]  # the planner is told why
    await runtime.close()


def test_a_plan_refers_to_earlier_results_only_where_their_kind_fits(tools):
    """A picture takes a whole step (the file it made); a yes-or-no or a named choice only itself."""
    import jsonschema

    def flag(keep: bool = True) -> str:
        """A tool with a flag.

        Args:
            keep: whether to keep it.
        """
        return str(keep)

    tools.add(FunctionTool(flag))
    schema = plan_schema(tools.definitions(), 3)

    def plan(tool: str, arguments: dict) -> dict:
        return {"steps": [{"thought": "t", "tool": "paint", "arguments": {"width": 2, "height": 2}},
                          {"thought": "t", "tool": tool, "arguments": arguments}]}

    for allowed in (plan("invert_image", {"image": "#E1"}), plan("paint", {"width": "#E1.width", "height": 2})):
        jsonschema.validate(allowed, schema)
    for refused in (plan("invert_image", {"image": "#E1.width"}), plan("flag", {"keep": "#E1"})):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(refused, schema)


def test_file_arguments_are_narrowed_to_known_ids_newest_first(tools):
    files = RunFiles(BASE)
    definitions = tools.definitions()
    assert with_file_choices(definitions, files) == definitions  # nothing known: left as it was
    files.learn_from_text("look [image file-aaa] and the report [file file-bbb]")
    files.add_artifact("file-ccc", "image", "made.png")
    narrowed = with_file_choices(definitions, files)
    assert image_parameter(narrowed, "invert_image")["enum"] == ["file-ccc", "file-aaa"]  # pictures only
    schema = step_schema(narrowed, 2)
    variant = next(v for v in schema["properties"]["tool_calls"]["items"]["anyOf"]
                   if v["properties"]["name"]["const"] == "image_size")
    assert variant["properties"]["arguments"]["properties"]["image"]["enum"] == ["file-ccc", "file-aaa"]
    assert "maxLength" not in variant["properties"]["arguments"]["properties"]["image"]
    assert plan_schema(narrowed, 3)["properties"]["steps"]["items"]["anyOf"]
    # An earlier answer's link names a file the thread may use again.
    files.learn_from_text(f"Done: ![x.png]({BASE}/files/file-ddd/content)")
    assert files.ids("image") == ["file-ddd", "file-ccc", "file-aaa"]
    assert files.ids("file") == ["file-ddd", "file-ccc", "file-bbb", "file-aaa"]


def test_links_are_added_once():
    files = RunFiles(BASE)
    files.add_artifact("file-aaa", "image", "a[1].png")
    files.add_artifact("file-bbb", "file", "report.csv")
    linked = link_artifacts("See it.", files)
    assert linked == (f"See it.\n\n![a_1_.png]({BASE}/files/file-aaa/content)\n"
                      f"[report.csv]({BASE}/files/file-bbb/content)")
    assert link_artifacts(linked, files) == linked
    assert link_artifacts("", files).startswith("![a_1_.png]")


async def test_vision_tools_chain_edges_into_boxes(tmp_path):
    registry = ToolRegistry([detect_edges, draw_boxes], file_store=FileStore(tmp_path / "files"))
    square = PILImage.new("RGB", (16, 16), "black")
    square.paste((255, 255, 255), (4, 4, 12, 12))
    photo = registry.context.file_store.put(Image.from_pil(square).data, "square.png", "vision", "image/png").id
    chosen = []

    def frame_the_edges(messages, definitions):
        chosen.append(image_parameter(definitions, "draw_boxes")["enum"])
        return calls(("draw_boxes", {"image": chosen[0][0], "boxes": [{"x": 2, "y": 2, "width": 12, "height": 12}]}))

    def find_edges(messages, definitions):
        assert [t["function"]["name"] for t in definitions] == ["detect_edges"]  # forced by the tool_choice
        return calls(("detect_edges", {"image": image_parameter(definitions, "detect_edges")["enum"][0]}))

    llm = ScriptedChatModel(acts=[find_edges, frame_the_edges, answer("Framed.")])
    runtime, outcome, steps = await start(registry, tmp_path, "agentd-react",
                                          [{"role": "user", "content": f"edges, then a box [image {photo}]"}], llm,
                                          tool_choice={"name": "detect_edges"})
    edges, framed = [s for s in steps if isinstance(s, Observation)]
    assert chosen == [[edges.artifacts[0]["file_id"], photo]]  # the newest picture first
    assert json.loads(edges.content.splitlines()[0])["edge_fraction"] > 0 and not framed.is_error
    for observation in (edges, framed):
        assert observation.artifacts[0]["url"] in outcome.answer
    await runtime.close()
    registry.close()


# -- end to end: the embedded model, a real server, the openai client --------------------------


@pytest.fixture(scope="module")
def image_server(registry, tmp_path_factory):
    # The plain embedded model thinks here: these tests follow pictures through an agent (one forced step), and
    # which optional arguments a brain picks is the tool-use adapter's tests' and the benchmark's business.
    running = RunningServer(create_app(Settings(data_dir=tmp_path_factory.mktemp("agent-images"), agent_max_steps=1,
                                                tools=[str(IMAGE_TOOLS)], tool_use_adapter=False), registry))
    yield running
    running.stop()


def test_a_picture_sent_with_a_named_tool_choice_comes_back_inverted_and_linked(image_server):
    picture = Image.from_pil(PILImage.new("RGB", (20, 12), (10, 200, 30))).to_data_url()
    client = image_server.client()
    stream = client.chat.completions.create(
        model="agentd-react", stream=True, tool_choice={"type": "function", "function": {"name": "invert_image"}},
        messages=[{"role": "user", "content": [{"type": "text", "text": "Invert the colours of this picture."},
                                               {"type": "image_url", "image_url": {"url": picture}}]}])
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    steps = [c.choices[0].delta.model_extra.get("agent_step") for c in chunks if c.choices]
    steps = [s for s in steps if s]
    first_call = next(s for s in steps if s["type"] == "tool_call")
    assert first_call["name"] == "invert_image" and first_call["arguments"]["image"].startswith("file-")
    observation = next(s for s in steps if s["type"] == "observation")
    artifact = observation["artifacts"][0]
    assert artifact["url"] == f"{image_server.url}/v1/files/{artifact['file_id']}/content"
    assert f"![inverted.png]({artifact['url']})" in content
    fetched = httpx.get(artifact["url"])
    assert fetched.status_code == 200 and fetched.headers["content-type"].startswith("image/png")
    returned = PILImage.open(io.BytesIO(fetched.content))
    assert returned.size == (20, 12) and returned.convert("RGB").getpixel((3, 3)) == (245, 55, 225)
    run = httpx.get(f"{image_server.url}/v1/runs/{chunks[0].model_extra['run_id']}").json()
    assert run["tool_choice"] == {"type": "function", "function": {"name": "invert_image"}}
    assert run["answer"] == content


def test_a_corner_and_size_the_person_said_are_what_the_call_writes(image_server):
    """Through the openai client, with the embedded model thinking: the corner and sides said are the
    crop's arguments whatever the model would have chosen (the plain 135M model cropped "the top-left
    corner, 50 pixels wide and 40 high" at x 50, 100 high)."""
    picture = PILImage.new("RGB", (30, 20), (0, 0, 255))
    picture.paste((255, 0, 0), (0, 0, 8, 6))  # the top-left 8 by 6 pixels are red
    reply = image_server.client().chat.completions.create(
        model="agentd-react", tool_choice={"type": "function", "function": {"name": "crop_image"}},
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "Cut out the top-left corner of this picture, 8 pixels wide and 6 high."},
            {"type": "image_url", "image_url": {"url": Image.from_pil(picture).to_data_url()}}]}])
    steps = reply.choices[0].message.model_extra["agent_steps"]
    call = next(s for s in steps if s["type"] == "tool_call")
    assert {key: call["arguments"][key] for key in ("x", "y", "width", "height")} == {
        "x": 0, "y": 0, "width": 8, "height": 6}
    observation = next(s for s in steps if s["type"] == "observation")
    cropped = PILImage.open(io.BytesIO(httpx.get(observation["artifacts"][0]["url"]).content)).convert("RGB")
    assert cropped.size == (8, 6) and cropped.getcolors() == [(48, (255, 0, 0))]


def test_a_tool_choice_an_agent_cannot_call_is_refused(image_server):
    url = f"{image_server.url}/v1/chat/completions"
    for model, name in (("agentd-react", "no_such_tool"), ("agentd-planner", "invert_image")):
        refused = httpx.post(url, json={"model": model, "messages": [{"role": "user", "content": "hi"}],
                                        "tool_choice": {"type": "function", "function": {"name": name}}})
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == "tool_choice" and name in error["message"]
    answered = image_server.client().chat.completions.create(
        model="agentd-react", tool_choice="none", messages=[{"role": "user", "content": "Say hello."}])
    kinds = [s["type"] for s in answered.choices[0].message.model_extra["agent_steps"]]
    assert kinds[-1] == "final_answer" and not {"tool_call", "observation"} & set(kinds)


def test_detect_edges_through_an_agent_returns_a_linked_edge_picture(image_server):
    square = PILImage.new("RGB", (24, 16), "black")
    square.paste((255, 255, 255), (6, 4, 18, 12))
    reply = image_server.client().chat.completions.create(
        model="agentd-react", tool_choice={"type": "function", "function": {"name": "detect_edges"}},
        messages=[{"role": "user", "content": [{"type": "text", "text": "Show me the outlines in this picture."},
                                               {"type": "image_url",
                                                "image_url": {"url": Image.from_pil(square).to_data_url()}}]}])
    message = reply.choices[0].message
    observation = next(s for s in message.model_extra["agent_steps"] if s["type"] == "observation")
    assert observation["name"] == "detect_edges" and not observation["is_error"], observation
    artifact = observation["artifacts"][0]
    assert f"![{artifact['filename']}]({artifact['url']})" in message.content
    edges = PILImage.open(io.BytesIO(httpx.get(artifact["url"]).content)).convert("L")
    assert edges.size == (24, 16) and edges.getpixel((0, 0)) == 0 and edges.getextrema() == (0, 255)


def test_a_runs_database_from_before_tool_choice_is_upgraded(tmp_path):
    old = sqlite3.connect(tmp_path / "runs.sqlite")
    old.execute("CREATE TABLE runs (id TEXT PRIMARY KEY, thread_id TEXT NOT NULL, agent TEXT NOT NULL, "
                "model TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL, finished_at REAL, "
                "input TEXT NOT NULL, steps TEXT NOT NULL DEFAULT '[]', answer TEXT, error TEXT)")
    old.execute("INSERT INTO runs (id, thread_id, agent, model, status, created_at, input) "
                "VALUES ('run-old', 't', 'agentd-react', 'm', 'completed', 0, 'hi')")
    old.commit()
    old.close()
    store = RunStore(tmp_path / "runs.sqlite")
    store.start("run-new", "t", "agentd-react", "m", "hi", {"name": "paint"})
    assert store.get("run-old")["tool_choice"] == "auto"
    assert store.get("run-new")["tool_choice"] == {"type": "function", "function": {"name": "paint"}}
    store.close()


def test_a_link_to_a_picture_this_server_made_is_sent_back_by_its_id(image_server):
    """A client sends back the link an answer gave ("now make that one smaller"): the stored
    picture is reused, not fetched; other links and missing ids are refused before the run."""
    picture = Image.from_pil(PILImage.new("RGB", (20, 12), (10, 200, 30))).to_data_url()
    stored = httpx.post(f"{image_server.url}/v1/tools/invert_image", json={"image": picture}).json()
    file_id = next(part["file_id"] for part in stored["content"] if part.get("file_id"))
    link = f"{image_server.url}/v1/files/{file_id}/content"
    files_before = len(httpx.get(f"{image_server.url}/v1/files").json()["data"])
    reply = image_server.client().chat.completions.create(
        model="agentd-react", tool_choice={"type": "function", "function": {"name": "invert_image"}},
        messages=[{"role": "user", "content": [{"type": "text", "text": "Invert it back."},
                                               {"type": "image_url", "image_url": {"url": link}}]}])
    call = next(s for s in reply.choices[0].message.model_extra["agent_steps"] if s["type"] == "tool_call")
    assert call["arguments"]["image"] == file_id  # the only picture the run knows: the one linked
    assert len(httpx.get(f"{image_server.url}/v1/files").json()["data"]) == files_before + 1  # just the result

    url = f"{image_server.url}/v1/chat/completions"
    for bad in ("https://example.com/cat.png", f"{image_server.url}/v1/files/file-0000/content"):
        refused = httpx.post(url, json={"model": "agentd-react", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Look"}, {"type": "image_url", "image_url": {"url": bad}}]}]})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "messages[0].content"
