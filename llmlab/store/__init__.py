"""Local SQLite store: calls, response cache, spans (and the export outbox), sweeps."""

from llmlab.store.database import Store, get_store, migrate

__all__ = ["Store", "get_store", "migrate"]
