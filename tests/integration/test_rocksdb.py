"""The RocksDB store (CHURN_STORE=rocksdb): the states a worker wrote survive its restart in
CHURN_DATA_DIR, with the changelog offset they hold, so the restarted worker reads only the
changelog beyond it (here: nothing) and serves the same states. Erasure over RocksDB, and
the rest of the suite, run in test_erasure.py and elsewhere with the memory store."""
from __future__ import annotations

import json
from collections import defaultdict

import pytest
import rocksdict

from worker.harness.conditions import read_to_end
from worker.harness.process import WorkerProcess
from worker.tools.generate import generate
from worker.tools.kafka_io import create_topics, produce
from worker.tools.restart_bench import read_back

from .conftest import run, topic_env

pytestmark = pytest.mark.integration
OFFSET_KEY = b"__faust\0offset__"  # where faust's RocksDB store keeps its persisted offset


def persisted_offsets(data_dir) -> dict[int, int]:
    """Per partition database under the worker's data directory, the offset it holds."""
    out = {}
    for path in sorted(data_dir.rglob("customer_state-*.db")):
        db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True),
                             access_type=rocksdict.AccessType.read_only())
        try:
            out[int(path.stem.rsplit("-", 1)[1])] = int(db[OFFSET_KEY])
        finally:
            db.close()
    return out


def recovery_tables(log: str) -> tuple[dict[int, int], dict[int, int]]:
    """From faust's recovery log: per active changelog partition, its highwater and the
    offset recovery started reading at."""
    def table(title: str) -> dict[int, int]:
        block = log[log.rindex(title):].split("\n+-", 2)[1]  # the rows after the header rule
        rows = [line.split("|") for line in block.splitlines()[1:] if line.startswith("|")]
        return {int(r[2]): int(r[3]) for r in rows}
    return table("Highwater - Active"), table("Reading Starts At - Active")


def test_a_restart_on_rocksdb_reads_no_changelog_already_held_and_serves_the_same_states(broker, tmp_path):
    env = {**topic_env("rocks"), "CHURN_STORE": "rocksdb", "CHURN_DATA_DIR": str(tmp_path / "data")}
    events = generate(customers=60, days=60, seed=8, start="2026-01-05T00:00:00+00:00")
    customers = sorted({e["customer_id"] for e in events})
    topic = env["CHURN_INPUT_TOPICS"]
    run(create_topics(broker.bootstrap, [topic], 4))
    run(produce(broker.bootstrap, topic, [json.dumps(e).encode() for e in events]))

    worker = WorkerProcess(broker.bootstrap, env, tmp_path / "a.log").start()
    try:
        worker.wait_consumed(len(events))
        before = read_back(worker, customers)
    finally:
        worker.stop()
    assert all(known for known, _, _ in before.values()) and sum(o for _, o, _ in before.values()) > 0

    ends: dict[int, int] = defaultdict(lambda: -1)
    for record in run(read_to_end(broker.bootstrap, f"{env['CHURN_APP_ID']}-customer_state-changelog")):
        ends[record.partition] = max(ends[record.partition], record.offset)
    assert persisted_offsets(tmp_path / "data") == dict(ends)  # the store holds the whole changelog

    again = WorkerProcess(broker.bootstrap, env, tmp_path / "b.log").start()
    try:
        again.wait_consumed(0)
        highwaters, starts = recovery_tables(again.log_tail(100_000))
        assert starts == highwaters and len(starts) == 4  # recovery started at the end: read nothing
        assert read_back(again, customers) == before
        recovered = again.metrics()
        assert recovered[("churn_customers_tracked",)] == len(customers)
    finally:
        again.stop()
