"""Run untrusted Python in a separate, limited process (the parent side of `sandbox_child.py`).

What protects the machine, outermost first:
1. A separate interpreter in its own session (`start_new_session`): a wall-clock limit kills
   its whole process group; its environment is scrubbed; it runs with `python -I`.
2. Resource limits (`setrlimit`): CPU seconds, address space (memory), size of written files,
   open files, no core dumps, and RLIMIT_NPROC=0 so it cannot fork or start threads.
3. When the server runs as root: a new network namespace (no network at all) and a drop to
   uid/gid `nobody` before any user code runs, so file permissions apply (root's home and the
   data dir under it are unreadable) and RLIMIT_NPROC is enforced.
4. A PEP 578 audit hook, installed before the user's code and impossible to remove from
   Python: no process creation (os.system, subprocess, fork, exec, spawn), no ctypes, no
   sockets, no signals to other processes, no symlinks or hard links; reading only inside the
   scratch directory and the Python installation; writing only inside the scratch directory.
5. A fresh scratch directory per call, deleted afterwards; the parent only parses a JSON
   result from a file it opened itself, and never follows paths the code produced.

Not protected against: CPU-cache side channels; a bug in CPython or a C extension that lets
code corrupt memory and then run native code (layers 1–3 still bind that code, layer 4 does
not); reading world-readable files inside the Python installation. Not root and no
namespaces means no network isolation beyond the audit hook.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

_CHILD = Path(__file__).with_name("sandbox_child.py")
_NOBODY = 65534


@dataclass(frozen=True)
class SandboxLimits:
    cpu_s: int = 10
    wall_s: float = 20.0
    memory_mb: int = 1024
    file_mb: int = 16
    max_output_chars: int = 20_000
    max_image_bytes: int = 8 * 2**20


@dataclass
class SandboxImage:
    name: str
    mime_type: str
    data: bytes = field(repr=False)


@dataclass
class SandboxResult:
    stdout: str = ""
    value: str | None = None
    error: str | None = None
    images: list[SandboxImage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0


def run_python(code: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `code` to completion or to a limit; never raises for anything the code does."""
    scratch = Path(tempfile.mkdtemp(prefix="agentd-python-"))
    private = Path(tempfile.mkdtemp(prefix="agentd-python-io-"))
    started = time.monotonic()
    try:
        if os.geteuid() == 0:
            os.chown(scratch, _NOBODY, _NOBODY)
        (scratch / ".matplotlib").mkdir()
        if os.geteuid() == 0:
            os.chown(scratch / ".matplotlib", _NOBODY, _NOBODY)
        request = {"code": code, **{name: getattr(limits, name) for name in (
            "cpu_s", "memory_mb", "file_mb", "max_output_chars", "max_image_bytes")}}
        with open(private / "result.json", "wb") as result_file, open(private / "stderr", "wb") as stderr_file:
            process = subprocess.Popen(
                [sys.executable, "-I", str(_CHILD)], stdin=subprocess.PIPE, stdout=result_file,
                stderr=stderr_file, cwd=scratch, env=_environment(scratch), start_new_session=True, close_fds=True)
            timed_out = _wait(process, json.dumps(request).encode(), limits.wall_s)
        result = _read_result(private, process.returncode, timed_out, limits)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(private, ignore_errors=True)
    result.duration_s = time.monotonic() - started
    return result


def _environment(scratch: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(scratch), "TMPDIR": str(scratch), "LANG": "C.UTF-8",
            "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(scratch / ".matplotlib"),
            # One thread per math library: RLIMIT_NPROC=0 forbids the pools they would start.
            "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _wait(process: subprocess.Popen, request: bytes, wall_s: float) -> bool:
    try:
        process.stdin.write(request)
        process.stdin.close()
    except BrokenPipeError:
        pass
    try:
        process.wait(timeout=wall_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
    return timed_out


def _read_result(private: Path, returncode: int, timed_out: bool, limits: SandboxLimits) -> SandboxResult:
    if timed_out:
        return SandboxResult(error=f"the code ran longer than the {limits.wall_s:g} s wall-clock limit and was stopped")
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return SandboxResult(error=f"the code used more than its {limits.cpu_s} s of CPU time and was stopped")
    if returncode == -signal.SIGXFSZ:
        return SandboxResult(error=f"the code wrote a file larger than {limits.file_mb} MB and was stopped")
    raw = (private / "result.json").read_bytes()[: 64 * 2**20]
    try:
        body = json.loads(raw)
        images = [SandboxImage(item["name"], item["mime_type"], base64.b64decode(item["data"])) for item in body["images"]]
    except (ValueError, KeyError, TypeError):
        stderr = (private / "stderr").read_bytes()[-2000:].decode(errors="replace").strip()
        return SandboxResult(error=f"the sandboxed process ended without a result (exit status {returncode})"
                                   + (f": {stderr}" if stderr else ""))
    notes = []
    if body.get("stdout_dropped"):
        notes.append(f"output cut at {limits.max_output_chars} characters ({body['stdout_dropped']} more not shown)")
    if body.get("images_dropped"):
        notes.append(f"{body['images_dropped']} image(s) left out (over {limits.max_image_bytes // 2**20} MB)")
    return SandboxResult(stdout=body.get("stdout", ""), value=body.get("value"), error=body.get("error"),
                         images=images, notes=notes)
