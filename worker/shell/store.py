"""The table's local store as the batch handler reads and writes it.

The handler writes customer states itself, a batch at a time, after the changelog has
them (worker.shell.output), so it needs the store by key, outside faust's per-event
table API:

- memory (`CHURN_STORE=memory`, tests and the demo): faust's memory store keeps a plain
  dict; the handler uses it as it is. Every restart recovers the table from the whole
  changelog.
- RocksDB (`CHURN_STORE=rocksdb`, production): faust's RocksDB store (rocksdict) keeps a
  database per partition under CHURN_DATA_DIR. Its own `__setitem__` needs a current
  stream event, so `RocksView` writes each key into its customer's partition database
  directly, and records the changelog offset written with it (the store's persisted
  offset): a restart then recovers only what the changelog holds beyond it.
"""
from __future__ import annotations

from typing import Any

from faust.types import TP

from worker.core.partitioner import partition_of


class RocksView:
    """Dict-like access (get, in, set, pop) to faust's RocksDB store, by customer key."""

    def __init__(self, store: Any, partitions: int, changelog_topic: str) -> None:
        self.store, self.partitions, self.changelog_topic = store, partitions, changelog_topic

    def _db(self, key: bytes) -> tuple[int, Any]:
        partition = partition_of(key, self.partitions)
        return partition, self.store._db_for_partition(partition)

    def get(self, key: bytes, default: Any = None) -> Any:
        value = self._db(key)[1].get(key)
        return default if value is None else value

    def __contains__(self, key: bytes) -> bool:
        return self._db(key)[1].get(key) is not None

    def __setitem__(self, key: bytes, value: bytes) -> None:
        partition, db = self._db(key)
        db.put(key, value)
        self.store._key_index[key] = partition  # where faust's own reads look first

    def pop(self, key: bytes, default: Any = None) -> Any:
        partition, db = self._db(key)
        value = db.get(key)
        if value is None:
            return default
        db.delete(key)
        self.store._key_index.pop(key, None)
        return value

    def persisted(self, offsets: dict[int, int]) -> None:
        """The changelog offsets the store now holds everything up to (per partition)."""
        for partition, offset in offsets.items():
            self.store.set_persisted_offset(TP(self.changelog_topic, partition), offset)


def local_store(table: Any, partitions: int) -> Any:
    """What the handler reads and writes: the memory store's dict, or a RocksView."""
    store = table.data
    if isinstance(getattr(store, "data", None), dict):  # faust's memory store
        return store.data
    return RocksView(store, partitions, table.changelog_topic.get_topic_name())


def written_offsets(acks: list[Any]) -> dict[int, int]:
    """Per changelog partition, the highest offset the broker acknowledged (a batch's
    acknowledgement names its first record: an offset no later than the batch's last, so
    a recovery from it reads that batch again, which writes the same values)."""
    offsets: dict[int, int] = {}
    for ack in acks:
        offset = getattr(ack, "offset", None)
        if isinstance(offset, int) and offset >= 0:
            offsets[ack.partition] = max(offset, offsets.get(ack.partition, -1))
    return offsets
