"""What evaluation runs leave behind: per-sample records and finished task results, in SQLite.

Per-sample records are keyed by (model fingerprint, task, task version, few-shot count, seed,
sample id): a run that finds its sample already there reuses it, so an interrupted run resumes
and a repeated one costs nothing. Finished `TaskResult`s are kept too, every one of them; the
leaderboard reads the newest per model × task.

Plain sqlite3 (WAL, a busy timeout) in one file, shared by the worker processes that write and
the server that reads. Not `agentd.store`: `evaluation/` is a library and imports no agentd.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.metrics import MetricValue


@dataclass
class TaskResult:
    """One model on one task: the aggregate scores and what makes them reproducible."""

    task: str
    task_version: str
    model: str
    model_fingerprint: str
    num_fewshot: int
    seed: int
    limit: int | None
    chat_template: bool
    samples: int
    unparsed: int  # outputs whose answer extraction could not parse
    metrics: dict[str, MetricValue]
    cached: int  # samples answered from the result store, not the model
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskResult:
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {key: value for key, value in data.items() if key in names}
        fields["metrics"] = {
            name: value if isinstance(value, MetricValue) else MetricValue(**value)
            for name, value in data.get("metrics", {}).items()
        }
        return cls(**fields)


@dataclass(frozen=True)
class SampleKey:
    """Which cached samples a run may reuse: the same model, task version, few-shot and seed."""

    fingerprint: str
    task: str
    task_version: str
    num_fewshot: int
    seed: int


_SCHEMA = """
CREATE TABLE IF NOT EXISTS eval_samples (
    fingerprint TEXT NOT NULL, task TEXT NOT NULL, task_version TEXT NOT NULL,
    num_fewshot INTEGER NOT NULL, seed INTEGER NOT NULL, sample_id TEXT NOT NULL,
    position INTEGER NOT NULL, model TEXT NOT NULL, prompt TEXT NOT NULL, output TEXT NOT NULL,
    target TEXT NOT NULL, score TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (fingerprint, task, task_version, num_fewshot, seed, sample_id)
);
CREATE TABLE IF NOT EXISTS eval_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL, fingerprint TEXT NOT NULL, task TEXT NOT NULL, task_version TEXT NOT NULL,
    result TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS eval_results_by_model_task ON eval_results (model, task, id);
"""


class ResultStore:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection, used from the event loop and from worker threads: a lock serialises it.
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    # -- per-sample records ------------------------------------------------------------------

    def cached_scores(self, key: SampleKey, sample_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Stored scores (as JSON dicts) of those of `sample_ids` already evaluated under `key`."""
        wanted = set(sample_ids)
        with self._lock:
            rows = self._db.execute(
                "SELECT sample_id, score FROM eval_samples WHERE fingerprint=? AND task=? AND task_version=?"
                " AND num_fewshot=? AND seed=?",
                (key.fingerprint, key.task, key.task_version, key.num_fewshot, key.seed),
            ).fetchall()
        return {sample_id: json.loads(score) for sample_id, score in rows if sample_id in wanted}

    def put_samples(self, key: SampleKey, model: str, records: list[dict[str, Any]]) -> None:
        """Store finished samples in one transaction: {sample_id, position, prompt, output, target, score}."""
        now = time.time()
        rows = [
            (key.fingerprint, key.task, key.task_version, key.num_fewshot, key.seed, str(r["sample_id"]),
             int(r["position"]), model, r["prompt"], r["output"], json.dumps(r.get("target"), default=str),
             json.dumps(r["score"]), now)
            for r in records
        ]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO eval_samples (fingerprint, task, task_version, num_fewshot, seed,"
                    " sample_id, position, model, prompt, output, target, score, created_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def set_positions(self, key: SampleKey, positions: list[tuple[str, int]]) -> None:
        """Renumber stored samples in the order of the latest run that used them, so that its
        records read back in its order (a run with another limit may have stored them)."""
        with self._lock:
            self._db.executemany(
                "UPDATE eval_samples SET position=? WHERE fingerprint=? AND task=? AND task_version=?"
                " AND num_fewshot=? AND seed=? AND sample_id=? AND position != ?",
                [(position, key.fingerprint, key.task, key.task_version, key.num_fewshot, key.seed,
                  sample_id, position) for sample_id, position in positions],
            )

    def samples(self, key: SampleKey, *, limit: int | None = None, offset: int = 0,
                positions_below: int | None = None) -> list[dict[str, Any]]:
        """Stored records under `key`, in sample order."""
        query = ("SELECT sample_id, position, model, prompt, output, target, score, created_at FROM eval_samples"
                 " WHERE fingerprint=? AND task=? AND task_version=? AND num_fewshot=? AND seed=?")
        args: list[Any] = [key.fingerprint, key.task, key.task_version, key.num_fewshot, key.seed]
        if positions_below is not None:
            query += " AND position < ?"
            args.append(positions_below)
        query += " ORDER BY position, sample_id LIMIT ? OFFSET ?"
        args += [-1 if limit is None else limit, offset]
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [
            {"sample_id": sample_id, "position": position, "model": model, "prompt": prompt, "output": output,
             "target": json.loads(target), "score": json.loads(score), "created_at": created_at}
            for sample_id, position, model, prompt, output, target, score, created_at in rows
        ]

    # -- finished results ----------------------------------------------------------------------

    def put_result(self, result: TaskResult) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO eval_results (model, fingerprint, task, task_version, result, created_at)"
                " VALUES (?,?,?,?,?,?)",
                (result.model, result.model_fingerprint, result.task, result.task_version,
                 json.dumps(result.to_dict()), time.time()),
            )

    def task_results(self, *, latest: bool = True, model: str | None = None,
                     task: str | None = None) -> list[TaskResult]:
        """Finished results, oldest first; with `latest`, only the newest per model × task."""
        query = "SELECT result FROM eval_results"
        where, args = [], []
        if latest:
            where.append("id IN (SELECT MAX(id) FROM eval_results GROUP BY model, task)")
        if model is not None:
            where.append("model = ?")
            args.append(model)
        if task is not None:
            where.append("task = ?")
            args.append(task)
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY id"
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [TaskResult.from_dict(json.loads(row)) for (row,) in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sample_records(store: ResultStore, result: TaskResult, *, limit: int | None = None,
                   offset: int = 0) -> list[dict[str, Any]]:
    """The per-sample records behind `result` (prompt, output, target, score), in sample order:
    for output items and reports. Records of a longer run on the same key are left out."""
    key = SampleKey(result.model_fingerprint, result.task, result.task_version, result.num_fewshot, result.seed)
    return store.samples(key, limit=limit, offset=offset, positions_below=result.samples)
