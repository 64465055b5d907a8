"""Finding a task from what a user names: a built-in, a file, or a definition given inline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from evaluation import data
from evaluation.requests import EvaluationError
from evaluation.tasks.base import Task
from evaluation.tasks.config import parse_config
from evaluation.tasks.configurable import ConfigurableTask
from evaluation.tasks.group import TaskGroup
from evaluation.tasks.user import task_from_rows

BUILTIN_DIR = Path(__file__).parent / "builtin"
DEFINITION_SUFFIXES = (".yaml", ".yml")


def builtin_tasks() -> list[str]:
    """Names of the tasks (and groups) shipped with the package."""
    return sorted(path.stem for path in BUILTIN_DIR.glob("*.yaml") if not path.stem.startswith("_"))


def load_task(spec: str | dict[str, Any]) -> Task:
    """A task from a built-in name, a data or definition file path, or a dict:
    `{"name": ...}`, `{"path": ..., "mapping": {...}}`, `{"rows": [...], "mapping"?: ...}`,
    `{"task": {inline definition}, "rows"?: [...]}`, or `{"type": "openai_eval", ...}`."""
    if isinstance(spec, str):
        return _load_named(spec)
    if not isinstance(spec, dict):
        raise EvaluationError(f"a task is a name, a path or an object, got {type(spec).__name__}", param="task")
    if spec.get("type") == "openai_eval":
        from evaluation.openai_evals import task_from_spec  # the Evals API's own task kind

        return task_from_spec(spec)
    if isinstance(spec.get("task"), dict):
        definition = dict(spec["task"])
        if "rows" in spec:
            definition["rows"] = spec["rows"]
        return _from_definition(definition, base_dir=None, source="inline definition")
    if "path" in spec:
        path = spec["path"]
        if not isinstance(path, str):
            raise EvaluationError("path must be a string", param="path")
        return _load_file(Path(path), mapping=spec.get("mapping"), name=spec.get("name"))
    if "rows" in spec:
        rows = spec["rows"]
        if not isinstance(rows, list) or not rows or not all(isinstance(row, dict) for row in rows):
            raise EvaluationError("rows must be a non-empty list of objects", param="rows")
        return task_from_rows(rows, name=str(spec.get("name") or "custom"), source="inline rows",
                              mapping=spec.get("mapping"))
    if isinstance(spec.get("name"), str):
        return _load_named(spec["name"])
    raise EvaluationError(f"a task object needs one of name, path, rows or task; got keys {sorted(spec)}", param="task")


def _load_named(name: str) -> Task:
    if name in builtin_tasks():
        return _load_definition_file(BUILTIN_DIR / f"{name}.yaml", source=f"built-in:{name}")
    path = Path(name)
    if path.suffix.lower() in (*data.FILE_SUFFIXES, *DEFINITION_SUFFIXES) or path.is_file():
        return _load_file(path)  # an existing file of another kind gets read_rows' "unsupported" error
    raise EvaluationError(f"unknown task {name!r}: built-in tasks are {', '.join(builtin_tasks())}; or give a path to "
                          f"a {', '.join(data.FILE_SUFFIXES + DEFINITION_SUFFIXES)} file", param="task")


def _load_file(path: Path, mapping: dict[str, str] | None = None, name: str | None = None) -> Task:
    if path.suffix.lower() in DEFINITION_SUFFIXES:
        if mapping:
            raise EvaluationError("mapping applies to data files; a .yaml definition names its own fields",
                                  param="mapping")
        return _load_definition_file(path, source=str(path))
    rows = data.read_rows(path)
    return task_from_rows(rows, name=name or path.stem, source=str(path), mapping=mapping)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise EvaluationError(f"task definition not found: {path}", param="task")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.constructor.ConstructorError as error:
        raise EvaluationError(f"{path.name}: YAML tags such as !function are not supported; preprocess documents "
                              "with `process_docs: <name>` instead", param="task") from error
    except yaml.YAMLError as error:
        raise EvaluationError(f"{path.name} is not valid YAML: {error}", param="task") from error
    if not isinstance(raw, dict):
        raise EvaluationError(f"{path.name} must hold a mapping of task fields", param="task")
    include = raw.get("include")
    if include is not None:  # the harness's inheritance: the included file's fields, then ours
        if not isinstance(include, str):
            raise EvaluationError(f"{path.name}: include must be a file name", param="include")
        base = _read_yaml(path.parent / include)
        raw = {**base, **{key: value for key, value in raw.items() if key != "include"}}
    return raw


def _load_definition_file(path: Path, source: str) -> Task:
    raw = _read_yaml(path)
    return _from_definition(raw, base_dir=path.parent, source=source)


def _content_version(raw: dict[str, Any]) -> str:
    return "def-" + hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _from_definition(raw: dict[str, Any], base_dir: Path | None, source: str) -> Task:
    if "group" in raw:
        return _group(raw, base_dir, source)
    return ConfigurableTask(parse_config(raw, base_dir=base_dir, default_version=_content_version(raw)), source)


def _group(raw: dict[str, Any], base_dir: Path | None, source: str) -> TaskGroup:
    name, members = raw["group"], raw.get("task")
    if not isinstance(name, str) or not isinstance(members, list) or not members:
        raise EvaluationError("a group needs a `group` name and a `task` list", param="task")
    tasks = []
    for member in members:
        local = base_dir / f"{member}.yaml" if isinstance(member, str) and base_dir else None
        if local is not None and local.is_file():
            tasks.append(_load_definition_file(local, source=f"{source}/{member}"))
        else:
            tasks.append(load_task(member))
    aggregate = raw.get("aggregate_metric_list")
    names = None
    if aggregate is not None:
        if not isinstance(aggregate, list):
            raise EvaluationError("aggregate_metric_list must be a list", param="aggregate_metric_list")
        names = [entry["metric"] if isinstance(entry, dict) else str(entry) for entry in aggregate]
    version = (raw.get("metadata") or {}).get("version") or _content_version(raw)
    return TaskGroup(name, str(version), tasks, aggregate=names, description=str(raw.get("description", "")),
                     source=source)
