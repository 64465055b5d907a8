"""Training data named by a file id or by a path: a path is uploaded to the file store first.

A person says "fine-tune on examples/support_tickets.jsonl", not "on file-3f2a…". A path is
read relative to the server's working directory, or found in the repository's `examples/`
folder, and nowhere else: the server may be reachable from the network, and a tool must not
read arbitrary files of the machine it runs on for whoever asks.
"""

from __future__ import annotations

import os
from pathlib import Path

from tools.base import ToolError
from tools.files import FileNotFound, FileStore

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
MAX_FILE_BYTES = 256 * 2**20  # read whole into memory and copied into the file store


def training_file_id(value: str, file_store: FileStore | None, *, root: Path | None = None,
                     examples: Path = EXAMPLES_DIR) -> str:
    """The file id of the training data `value` names: an uploaded file's id as it is, or a
    JSONL path (under `root`, the working directory by default, or under `examples`) uploaded
    now with purpose fine-tune. Raises ToolError for a path elsewhere, a missing file, or data
    that is not fine-tuning JSONL."""
    if value.startswith("file-"):
        if file_store is not None:
            try:
                file_store.get(value)
            except FileNotFound:
                raise ToolError(f"no file with id {value!r}; upload it with purpose 'fine-tune' first, or give "
                                "the path of a JSONL file") from None
        return value
    if file_store is None:
        raise ToolError("file uploads are not enabled on this server, so a training file path cannot be used")
    path = local_data_path(value, root=root, examples=examples)
    data = path.read_bytes()
    from agentd.jobs.fine_tune import validate_upload
    from training import DataError

    try:
        validate_upload(data, path.name)
    except (DataError, ValueError) as error:
        raise ToolError(f"{value} is not usable training data: {error}") from None
    return file_store.put(data, path.name, purpose="fine-tune", mime_type="application/jsonl").id


def local_data_path(value: str, *, root: Path | None = None, examples: Path = EXAMPLES_DIR,
                    kind: str = "training files", instead: str = "a file id (file-...) or the path of a JSONL file") -> Path:
    """The existing file `value` names under `root` (default: the working directory) or
    `examples`; ToolError for anything else (outside both, missing, a folder, too big). `kind`
    names the files in the refusal, `instead` what to give for a missing one."""
    root = Path(root or os.getcwd()).resolve()
    examples = examples.resolve()
    allowed = (root, examples)
    given = Path(value).expanduser()
    candidates = [given] if given.is_absolute() else [root / given, examples / given, examples.parent / given]
    try:
        resolved = [path.resolve() for path in candidates]
    except (OSError, ValueError) as error:  # a NUL byte, a loop of links
        raise ToolError(f"{value!r} is not a usable path: {error}") from None
    inside = [path for path in resolved if _within(path, allowed)]
    if not inside or any(path.is_file() and path not in inside for path in resolved[:1]):
        raise ToolError(f"refused {value!r}: {kind} are read only from the server's working directory "
                        f"({root}) or its examples folder; upload the file and pass its file id instead")
    for path in inside:
        if path.is_file():
            if path.stat().st_size > MAX_FILE_BYTES:
                raise ToolError(f"{value} is over {MAX_FILE_BYTES // 2**20} MiB; upload it through /v1/files instead")
            return path
    raise ToolError(f"no file {value!r} in the working directory ({root}) or in {examples}; give {instead}")


def _within(path: Path, folders: tuple[Path, ...]) -> bool:
    # Resolved first, so `..` and symbolic links cannot step outside.
    return any(path == folder or path.is_relative_to(folder) for folder in folders)
