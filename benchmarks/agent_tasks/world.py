"""What the benchmark's agents act on: the tool registry, the stand-in services, the uploaded
files and seeded jobs the requests name through `{placeholders}`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from standins import StandInDeployments, StandInJobs
from tools import FileStore, ToolRegistry
from tools.builtin import builtin_tools
from tools.builtin.deployment import DeploymentTools
from tools.builtin.evaluation import EvaluationTools
from tools.builtin.jobs import JobTools
from tools.builtin.workflow import WorkflowTools

HERE = Path(__file__).parent
PHOTO_SIZE = (320, 240)  # width, height: tasks ask for it and for half its height
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass
class World:
    tools: ToolRegistry
    jobs: StandInJobs
    deployments: StandInDeployments
    placeholders: dict[str, str] = field(default_factory=dict)

    def fill(self, text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: self.placeholders.get(m[1], m[0]), text)

    def close(self) -> None:
        self.tools.close()


def tool_registry(work: Path, jobs: StandInJobs, deployments: StandInDeployments, file_store: FileStore) -> ToolRegistry:
    """The server's tools (agentd/server/app.py adds the same toolkits), on the stand-in services."""
    tools = ToolRegistry(builtin_tools(work), file_store=file_store)
    tools.add(JobTools(jobs, poll_s=0.01))
    tools.add(EvaluationTools(jobs, poll_s=0.01))
    tools.add(DeploymentTools(deployments))
    tools.add(WorkflowTools(jobs, deployments, poll_s=0.01))
    return tools


async def prepare(work: Path) -> World:
    """A fresh world under `work`: handbook ingested, pictures and tickets uploaded, one running
    fine-tune, one finished fine-tune (`{tuned}`), one evaluation and one deployment of it."""
    file_store = FileStore(work / "files")
    jobs = StandInJobs(work, file_store)
    deployments = StandInDeployments(jobs)
    tools = tool_registry(work, jobs, deployments, file_store)
    await tools.invoke("knowledge_ingest", {"document": f"data:text/markdown;name=handbook.md,"
                                                        f"{(HERE / 'handbook.md').read_text()}"})
    found = {
        "photo": file_store.put(_png(photo()), "photo.png", "vision").id,
        "scan": file_store.put(_png(scan()), "scan.png", "vision").id,
        "face": file_store.put(_jpeg(face()), "portrait.jpg", "vision").id,
        "tickets": file_store.put(tickets(), "tickets.jsonl", "fine-tune").id,
        "job": jobs.seed_running_fine_tune().id,
    }
    done = await jobs.create_fine_tune(model="smollm2-135m-instruct", training_file=found["tickets"])
    found["done_job"], found["tuned"] = done.id, done.result["fine_tuned_model"]
    found["eval_job"] = (await jobs.create_evaluation(models=[found["tuned"]], tasks=["arc_easy"])).id
    found["deployment"] = (await deployments.create(model=found["tuned"])).id
    return World(tools, jobs, deployments, found)


def photo() -> np.ndarray:
    """A 320×240 colour picture: sky, ground, a sun and a house."""
    width, height = PHOTO_SIZE
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[: height // 2] = (235, 180, 120)  # BGR: light blue sky
    pixels[height // 2:] = (60, 140, 70)  # green ground
    cv2.circle(pixels, (260, 50), 28, (40, 220, 250), -1)
    cv2.rectangle(pixels, (80, 100), (180, 190), (50, 60, 170), -1)
    cv2.fillPoly(pixels, [np.array([(70, 100), (130, 55), (190, 100)], np.int32)], (30, 30, 90))
    return pixels


def scan() -> np.ndarray:
    """A 400×300 grey page with a few dark shapes: edges to find, no faces."""
    pixels = np.full((300, 400), 230, np.uint8)
    cv2.rectangle(pixels, (30, 30), (180, 130), 40, 3)
    cv2.circle(pixels, (290, 90), 50, 60, -1)
    cv2.line(pixels, (30, 220), (370, 260), 20, 4)
    return pixels


def face() -> np.ndarray:
    """scikit-image's astronaut portrait (shipped with the package): one face OpenCV finds."""
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def tickets() -> bytes:
    """A small chat-format training file of support questions and answers."""
    pairs = [("How do I reset my password?", "Open Settings, choose Security and press Reset password."),
             ("Where can I download my invoice?", "Invoices are under Billing, then History."),
             ("Can I change my plan mid-month?", "Yes; the price difference is charged pro rata."),
             ("The app crashes at start.", "Update to the latest version, then clear the cache."),
             ("How do I add a team member?", "Go to Team, press Invite and enter their e-mail."),
             ("Is there a dark mode?", "Yes: Settings, Appearance, Dark."),
             ("How do I export my data?", "Settings, Privacy, Export gives a ZIP within an hour."),
             ("Why was my card declined?", "The bank refused it; try another card or call the bank.")]
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in pairs]
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def _png(pixels: np.ndarray) -> bytes:
    return cv2.imencode(".png", pixels)[1].tobytes()


def _jpeg(pixels: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
