"""Runs inside the sandbox process (started with `python -I`); never imported by the server.

Order matters: read the request, limit resources, import the libraries the code will need,
leave the network and drop root (if root), then install the audit hook that no later code can
remove, and only then run the user's code. The result goes to the file the parent opened as
fd 1; the user's own prints go to a bounded buffer.
"""

import ast
import base64
import io
import json
import linecache
import os
import resource
import sys
import traceback

# Imported before the drop to `nobody`: when the interpreter lives under root's home, nothing
# else of the standard library can be imported afterwards. This is the sandbox's stdlib.
STANDARD = (
    "zlib threading math cmath random datetime json re collections itertools functools statistics fractions "
    "decimal string textwrap typing dataclasses copy heapq bisect operator io time calendar hashlib base64 "
    "struct enum numbers array difflib unicodedata csv pprint traceback warnings contextlib weakref secrets uuid "
    "locale gzip bz2 lzma zipfile pathlib fnmatch html urllib.parse codecs queue sqlite3 graphlib colorsys "
    "zoneinfo inspect ast types errno encodings.latin_1 encodings.ascii encodings.utf_16 encodings.utf_32 "
    "encodings.cp1252 encodings.idna").split()
# Third-party libraries imported (with the submodules they load lazily) only when the code names them.
LIBRARIES = {
    "numpy": ("numpy", "numpy.random", "numpy.linalg", "numpy.fft", "numpy.polynomial"),
    "matplotlib": ("matplotlib", "matplotlib.pyplot", "PIL.PngImagePlugin"),
    "PIL": ("PIL", "PIL.Image", "PIL.ImageDraw", "PIL.ImageFilter", "PIL.ImageOps", "PIL.PngImagePlugin"),
    "pandas": ("pandas",), "scipy": ("scipy", "scipy.stats", "scipy.optimize"), "sympy": ("sympy",),
}
NOBODY = 65534
CLONE_NEWNET = 0x40000000
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp", ".svg": "image/svg+xml"}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
BLOCKED_PREFIXES = ("ctypes.", "socket.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
                    "os.kill", "os.system", "os.symlink", "os.link", "pty.", "webbrowser.", "sys.addaudithook",
                    "os.setuid", "os.setgid", "resource.setrlimit", "resource.prlimit")
LISTING_EVENTS = {"os.listdir", "os.scandir", "glob.glob", "os.walk"}
CHANGING_EVENTS = {"os.chdir", "os.mkdir", "os.remove", "os.rmdir", "os.rename", "os.chmod", "os.chown",
                   "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move"}


class BoundedText(io.TextIOBase):
    def __init__(self, limit):
        self.limit, self.parts, self.size, self.dropped = limit, [], 0, 0

    def writable(self):
        return True

    def write(self, text):
        room = self.limit - self.size
        if room > 0:
            self.parts.append(text[:room])
            self.size += min(room, len(text))
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def getvalue(self):
        return "".join(self.parts)


def limit_resources(request):
    def cap(kind, soft, hard=None):
        resource.setrlimit(kind, (soft, soft if hard is None else hard))

    cap(resource.RLIMIT_CPU, request["cpu_s"], request["cpu_s"] + 1)
    cap(resource.RLIMIT_AS, request["memory_mb"] * 2**20)
    cap(resource.RLIMIT_FSIZE, request["file_mb"] * 2**20)
    cap(resource.RLIMIT_NOFILE, 64)
    cap(resource.RLIMIT_CORE, 0)


def preimport(code):
    try:
        tree = ast.parse(code)
    except SyntaxError:
        tree = ast.Module(body=[], type_ignores=[])
    wanted = list(STANDARD)
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] in LIBRARIES:
                wanted += [*LIBRARIES[name.split(".")[0]], name]
    for name in wanted:
        try:
            __import__(name)
        except Exception:  # not installed, or `from x import function`: the user's own import will say so
            pass


def isolate():
    """As root: leave the network namespace and become `nobody`, so that file permissions and
    RLIMIT_NPROC (ignored for root) apply. Not root: nothing to drop; NPROC=0 already binds."""
    if os.geteuid() == 0:
        import ctypes

        ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET)
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))


def install_audit_hook(scratch):
    readable = [scratch] + sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
    readable += ["/dev/null", "/dev/urandom", "/usr/share/zoneinfo", "/usr/share/fonts"]

    def inside(path, roots):
        real = os.path.realpath(os.fsdecode(path))
        return any(real == root or real.startswith(root.rstrip("/") + "/") for root in roots)

    def hook(event, args):
        if event.startswith(BLOCKED_PREFIXES):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = args
            if path is None or isinstance(path, int):
                return
            writing = any(c in (mode or "") for c in "wax+") or (flags not in (None, -1) and flags & WRITE_FLAGS)
            if not inside(path, [scratch] if writing else readable):
                raise PermissionError(f"sandbox: cannot {'write' if writing else 'read'} {os.fsdecode(path)}")
        elif event in LISTING_EVENTS or event in CHANGING_EVENTS:
            roots = readable if event in LISTING_EVENTS else [scratch]
            for arg in args[:2]:
                if isinstance(arg, (str, bytes, os.PathLike)) and not inside(arg, roots):
                    raise PermissionError(f"sandbox: {event} on {os.fsdecode(arg)} is not allowed")

    sys.addaudithook(hook)


def run(code, namespace):
    """Exec the code; if its last statement is an expression, return that value's repr."""
    lines = code.splitlines(keepends=True)
    linecache.cache["<python>"] = (len(code), None, lines, "<python>")
    tree = ast.parse(code, "<python>", "exec")
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, "<python>", "exec"), namespace)
    if last is not None:
        value = eval(compile(ast.Expression(last.value), "<python>", "eval"), namespace)
        if value is not None:
            return repr(value)
    return None


def user_traceback(error):
    frames = traceback.extract_tb(error.__traceback__)
    user_frames = [frame for frame in frames if frame.filename == "<python>"]
    text = "Traceback (most recent call last):\n" if user_frames else ""
    text += "".join(traceback.format_list(user_frames))
    return text + "".join(traceback.format_exception_only(type(error), error))


def collect_images(scratch, max_bytes):
    images, used = [], 0
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        for number in pyplot.get_fignums():
            buffer = io.BytesIO()
            pyplot.figure(number).savefig(buffer, format="png")
            images.append({"name": f"figure-{number}.png", "mime_type": "image/png", "data": buffer.getvalue()})
    for entry in sorted(os.scandir(scratch), key=lambda e: e.name):
        mime = IMAGE_TYPES.get(os.path.splitext(entry.name)[1].lower())
        if mime and entry.is_file(follow_symlinks=False):
            with open(entry.path, "rb") as handle:
                images.append({"name": entry.name, "mime_type": mime, "data": handle.read(max_bytes + 1)})
    kept = []
    for image in images:
        used += len(image["data"])
        if used <= max_bytes:
            kept.append({**image, "data": base64.b64encode(image["data"]).decode()})
    return kept, len(images) - len(kept)


def main():
    request = json.loads(sys.stdin.read())
    result_fd = os.dup(1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    scratch = os.path.realpath(os.getcwd())
    limit_resources(request)
    preimport(request["code"])
    isolate()
    install_audit_hook(scratch)

    stdout = BoundedText(request["max_output_chars"])
    sys.stdout = sys.stderr = stdout
    result = {"value": None, "error": None}
    try:
        result["value"] = run(request["code"], {"__name__": "__main__"})
    except MemoryError:
        result["error"] = f"MemoryError: the code needed more than the {request['memory_mb']} MB it may use"
    except BaseException as error:  # SystemExit and KeyboardInterrupt are results too
        result["error"] = user_traceback(error)
    try:
        result["images"], result["images_dropped"] = collect_images(scratch, request["max_image_bytes"])
    except Exception as error:
        result["images"], result["images_dropped"] = [], 0
        result["error"] = (result["error"] or "") + f"\n(could not save figures: {error})"
    result["stdout"] = stdout.getvalue()
    result["stdout_dropped"] = stdout.dropped
    payload = json.dumps(result).encode()
    while payload:
        payload = payload[os.write(result_fd, payload):]


main()
