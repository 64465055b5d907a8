"""The deployment store: one SQLite file with each deployment's record and its events."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

from agentd.deployments.model import Deployment, DeploymentError, Status
from agentd.store import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY, model TEXT NOT NULL, served_id TEXT NOT NULL, engine TEXT NOT NULL,
    status TEXT NOT NULL, adapters TEXT NOT NULL, options TEXT NOT NULL, keep_alive_s REAL,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, error TEXT, pid INTEGER, url TEXT,
    restarts INTEGER NOT NULL DEFAULT 0, source TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS deployments_by_status ON deployments (status, created_at);
CREATE TABLE IF NOT EXISTS deployment_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, deployment_id TEXT NOT NULL, time REAL NOT NULL,
    type TEXT NOT NULL, message TEXT NOT NULL, data TEXT);
CREATE INDEX IF NOT EXISTS deployment_events_by_id ON deployment_events (deployment_id, seq);
"""

_JSON_COLUMNS = ("adapters", "options", "source")


class DeploymentStore:
    def __init__(self, path: Path):
        self._db = Database(path, _SCHEMA)

    def create(self, deployment: Deployment) -> Deployment:
        deployment.id = f"dep-{secrets.token_hex(6)}"
        row = _row(deployment)
        with self._db.transaction():
            self._db.execute(f"INSERT INTO deployments ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                             tuple(row.values()))
            self.add_event(deployment.id, "created", f"deployment of {deployment.model} as {deployment.served_id} "
                                                     f"on the {deployment.engine} engine")
        return deployment

    def get(self, deployment_id: str) -> Deployment:
        row = self._db.fetch_one("SELECT * FROM deployments WHERE id = ?", (deployment_id,))
        if row is None:
            raise DeploymentError(f"no deployment with id {deployment_id!r}", 404, param="deployment_id",
                                  code="deployment_not_found")
        return _deployment(row)

    def list(self, statuses: tuple[Status, ...] = ()) -> list[Deployment]:
        where = f" WHERE status IN ({', '.join('?' * len(statuses))})" if statuses else ""
        rows = self._db.fetch_all(f"SELECT * FROM deployments{where} ORDER BY created_at, id", statuses)
        return [_deployment(row) for row in rows]

    def update(self, deployment_id: str, *, event: tuple[str, str] | None = None,
               event_data: dict[str, Any] | None = None, **fields: Any) -> Deployment:
        """Change fields (JSON ones as Python values) and record `event` (type, message) with them."""
        values = {key: json.dumps(value) if key in _JSON_COLUMNS else value for key, value in fields.items()}
        values["updated_at"] = int(time.time())
        with self._db.transaction():
            self._db.execute(f"UPDATE deployments SET {', '.join(f'{key} = ?' for key in values)} WHERE id = ?",
                             (*values.values(), deployment_id))
            if event is not None:
                self.add_event(deployment_id, *event, data=event_data)
        return self.get(deployment_id)

    def add_event(self, deployment_id: str, type: str, message: str, data: dict[str, Any] | None = None) -> None:
        self._db.execute("INSERT INTO deployment_events (deployment_id, time, type, message, data) "
                         "VALUES (?, ?, ?, ?, ?)",
                         (deployment_id, time.time(), type, message, None if data is None else json.dumps(data)))

    def events(self, deployment_id: str, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self._db.fetch_all("SELECT seq, time, type, message, data FROM deployment_events "
                                  "WHERE deployment_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                                  (deployment_id, after, limit))
        return [{**json.loads(row.pop("data") or "{}"), **row} for row in rows]

    def close(self) -> None:
        self._db.close()


def _row(deployment: Deployment) -> dict[str, Any]:
    return {
        "id": deployment.id, "model": deployment.model, "served_id": deployment.served_id,
        "engine": deployment.engine, "status": deployment.status, "adapters": json.dumps(deployment.adapters),
        "options": json.dumps(deployment.options), "keep_alive_s": deployment.keep_alive_s,
        "created_at": deployment.created_at, "updated_at": deployment.updated_at, "error": deployment.error,
        "pid": deployment.pid, "url": deployment.url, "restarts": deployment.restarts,
        "source": json.dumps(deployment.source),
    }


def _deployment(row: dict[str, Any]) -> Deployment:
    return Deployment(**{**row, **{key: json.loads(row[key]) for key in _JSON_COLUMNS}})
