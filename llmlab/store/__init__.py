"""Local SQLite store: calls, response cache, spans (and the export outbox), sweeps."""

from .database import Store, get_store, migrate

__all__ = ["Store", "get_store", "migrate"]
