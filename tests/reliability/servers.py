"""A real `agentd serve` process for the reliability tests that kill it, or its workers, or lock its
database from outside, with the helpers they share."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

from agentd.jobs import open_store


class Server:
    def __init__(self, data_dir: Path, tiny: Path, log: Path | None = None):
        self.data_dir, self.tiny = data_dir, tiny
        self.log = log or data_dir / "server.log"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> Server:
        agentd = Path(sys.executable).with_name("agentd")
        log = open(self.log, "ab")  # noqa: SIM115 - the process writes it until killed
        self.process = subprocess.Popen(
            [str(agentd), "serve", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.data_dir),
             "--model", f"tiny={self.tiny}", "--engine", "transformers"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError("the server did not come up")

    def crash(self, *worker_pids: int) -> None:
        """SIGKILL to the server and to the workers it started: nothing gets to clean up."""
        for pid in (self.process.pid, *worker_pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=2, timeout=60)


def until(predicate, timeout=240, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def worker_pid(data_dir: Path, job_id: str) -> int:
    store = open_store(data_dir)
    try:
        return store.get(job_id).worker_pid
    finally:
        store.close()
