"""The python tool: results, figures, limits, and the known escape attempts."""

from __future__ import annotations

import os

import pytest

from tests.conftest import DATA_DIR
from tools import FileStore, ToolRegistry
from tools.builtin.python import PythonTool
from tools.sandbox import SandboxLimits, run_python

FAST = SandboxLimits(cpu_s=2, wall_s=5, memory_mb=512, max_output_chars=2000)


def run(code: str, limits: SandboxLimits = FAST):
    return run_python(code, limits)


def test_output_value_and_state_per_call():
    result = run("x = 6 * 7\nprint('hello')\nx")
    assert (result.stdout, result.value, result.error) == ("hello\n", "42", None)
    assert "NameError" in run("x").error  # nothing survives between calls


def test_numpy_and_figures():
    result = run("import numpy as np\nimport matplotlib.pyplot as plt\n"
                 "plt.plot(np.arange(5) ** 2)\nplt.savefig('saved.png')\nfloat(np.mean([1, 2, 3]))")
    assert result.error is None and result.value == "2.0"
    names = sorted(image.name for image in result.images)
    assert names == ["figure-1.png", "saved.png"]
    assert all(image.data.startswith(b"\x89PNG") for image in result.images)


def test_exceptions_show_the_users_lines_only():
    result = run("def f():\n    return 1 / 0\nf()")
    assert "line 2, in f" in result.error and "ZeroDivisionError" in result.error
    assert "sandbox_child" not in result.error


def test_output_is_bounded():
    result = run("print('x' * 100_000)")
    assert len(result.stdout) == 2000 and "output cut at 2000 characters" in result.notes[0]


def test_infinite_loop_hits_the_cpu_limit():
    assert "CPU time" in run("while True: pass").error


def test_sleeping_hits_the_wall_clock_limit():
    limits = SandboxLimits(cpu_s=2, wall_s=1.5)
    assert "wall-clock" in run("import time\ntime.sleep(60)", limits).error


def test_memory_bomb_is_stopped():
    assert "MemoryError" in run("x = bytearray(4 * 1024 ** 3)").error
    assert "MemoryError" in run("x = [0] * (10 ** 10)").error


def test_huge_files_are_stopped():
    result = run("open('big.bin', 'wb').write(b'0' * (64 * 1024 * 1024))", SandboxLimits(cpu_s=5, wall_s=10, file_mb=4))
    assert result.error and ("larger than 4 MB" in result.error or "File too large" in result.error)


@pytest.mark.parametrize("code", [
    "open('/etc/passwd').read()",
    "import os\nos.listdir('/')",
    "import io\nio.open_code('/etc/hostname')",
    "import os\nos.open('/etc/passwd', os.O_RDONLY)",
    "open('../escape.txt', 'w').write('x')",
    "import os\nos.symlink('/etc/passwd', 'link.png')",
    "open('/proc/self/environ').read()",
])
def test_no_file_access_outside_the_working_directory(code):
    error = run(code).error
    assert error and ("sandbox:" in error or "Permission" in error)


def test_the_data_dir_is_out_of_reach():
    secret = DATA_DIR / "sandbox-secret.txt"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text("do not read")
    try:
        result = run(f"print(open({str(secret)!r}).read())")
        assert "do not read" not in result.stdout and "PermissionError" in result.error
    finally:
        secret.unlink()


@pytest.mark.parametrize("code", [
    "import os\nos.system('id')",
    "import subprocess\nsubprocess.run(['id'])",
    "import os\nos.execv('/bin/sh', ['sh'])",
    "import os\nos.posix_spawn('/bin/true', ['true'], {})",
    "import os\nwhile True:\n    os.fork()",
    "import subprocess\nsubprocess.Popen(['true'])",
    "import threading\nthreading.Thread(target=print).start()",
])
def test_no_processes_or_threads(code):
    result = run(code)
    assert result.error and any(word in result.error for word in ("sandbox:", "ModuleNotFoundError",
                                                                   "can't start new thread", "BlockingIOError"))


@pytest.mark.parametrize("code", [
    "import ctypes\nctypes.CDLL(None).system(b'id')",
    "import ctypes\nctypes.string_at(id(1), 8)",
    "import ctypes\nctypes.pythonapi.Py_GetVersion",
    "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)",
    "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
])
def test_no_ctypes_sockets_or_signals(code):
    result = run(code)
    assert result.error and any(word in result.error for word in ("sandbox:", "ModuleNotFoundError"))


def test_os_level_limits_are_in_place():
    result = run("import resource, os\n(resource.getrlimit(resource.RLIMIT_NPROC), os.getuid() == 0)")
    assert result.value == "((0, 0), False)" if os.geteuid() == 0 else result.value.startswith("((0, 0)")


def test_the_audit_hook_cannot_be_removed():
    result = run("import sys\nsys.addaudithook(lambda *a: None)\nopen('/etc/passwd').read()")
    assert "sandbox:" in result.error


async def test_the_python_tool_returns_text_and_figures(tmp_path):
    registry = ToolRegistry([PythonTool(FAST)], file_store=FileStore(tmp_path / "files"))
    result = await registry.invoke("python", {"code": "import matplotlib.pyplot as plt\nplt.bar([1, 2], [3, 4])\n"
                                                      "print('drawn')\n1 + 1"})
    assert result.ok and result.content[0].text == "stdout:\ndrawn\nvalue: 2"
    (figure,) = result.artifacts
    assert figure.kind == "image" and figure.file_id and figure.mime_type == "image/png"
    failed = await registry.invoke("python", {"code": "print('before')\nraise ValueError('bad input')"})
    assert failed.error.kind == "tool_error"
    assert "before" in failed.observation() and "ValueError: bad input" in failed.observation()
