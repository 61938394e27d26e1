"""All SQL lives in this package; services use `Store` and the query modules beside it."""

from bridge.store.db import Store, connect, open_store, savepoint

__all__ = ["Store", "connect", "open_store", "savepoint"]
