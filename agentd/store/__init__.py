"""The one small SQLite layer every agentd store is built on: jobs, agent runs, files, the knowledge base.

It opens a file the same way for all of them (WAL, a bounded busy timeout, foreign keys, one
connection shared by threads under one lock), creates the schema, runs queries returning rows
as dicts, groups writes in transactions, and turns a locked, full or unreadable database into
`StoreError`. It imports nothing else of the project, so `tools/` may use it too.
"""

from agentd.store.database import BUSY_TIMEOUT_S, Database, StoreError

__all__ = ["BUSY_TIMEOUT_S", "Database", "StoreError"]
