"""`churn-worker bench`: the worker beside the ceilings it runs under, in one run, on one broker.

    raw_eps         aiokafka getmany + json.loads over the benchmark topic
    faust_bare_eps  a bare faust agent iterating the same topic (worker.tools.bench_faust)
    naive_eps       the worker processing one event at a time (CHURN_BATCH_SIZE=1): the mean
                    of a window just before and one just after the shipped worker's run, so
                    the ratio compares the two in the same phase of a noisy machine
                    (naive_eps_runs has both)
    worker_eps      the worker as shipped, at steady state (20%..90% of the stream), and
                    worker_decisions_per_event: the rows it scored per input event meanwhile
                    (events, and the silence deadlines that came due)
    *_stream_eps    the same two with a faust agent reading the input (CHURN_INPUT_MODE=stream):
                    what reading a fetch at a time beneath faust's stream buys
    produce_ack     one send awaited to its acknowledgement (acks=all), p50, measured just before
                    naive_eps: the one-at-a-time worker awaits up to two per event
    latency         event append -> trigger append, p50/p95/p99, at a fixed offered load, and
                    the worker's CPU meanwhile (latency_worker_cpu, cores): near 1, the worker
                    was saturated in that phase of the machine and the tail is queueing;
                    latency_broker_*: the broker's own append -> consume delay at that load,
                    on a fresh topic, just before (the floor under the worker's figure)
    memory, state size, timer tick cost at 1,000,000 customers, training time for 1,000,000 events

Every figure is measured here and now; nothing is asserted. The worker runs as its own
process exactly as `churn-worker run` would, pointed at the benchmark topics.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.core.events import format_time
from worker.harness.broker import EmbeddedBroker, free_port
from worker.harness.process import WorkerProcess, consumed
from worker.tools.kafka_io import create_topics, produce

T0 = 1767571200.0  # 2026-01-05, the benchmark stream's first day
SPAN_DAYS = 60.0  # the event time the benchmark stream covers


@dataclass(frozen=True)
class Sizes:
    events: int = 200_000
    customers: int = 100_000
    naive_window_s: float = 20.0
    latency_eps: float = 2000.0
    latency_s: float = 15.0
    memory_customers: int = 1_000_000
    train_events: int = 1_000_000


QUICK = Sizes(events=4000, customers=2000, naive_window_s=3.0, latency_eps=200.0, latency_s=3.0,
              memory_customers=20_000, train_events=20_000)


def bench_stream(n_events: int, n_customers: int, seed: int = 1, span_days: float = SPAN_DAYS) -> list[bytes]:
    """Valid events, time-ordered, spread over customers: 80% logins, 15% purchases, 5% support."""
    rng = random.Random(seed)
    out = []
    for i in range(n_events):
        t = T0 + span_days * 86400 * i / n_events
        cid = f"b-{rng.randrange(n_customers):07d}"
        roll = rng.random()
        event = {"schema_version": 1, "event_id": f"be-{seed}-{i}", "customer_id": cid, "occurred_at": format_time(t)}
        if roll < 0.80:
            event.update(type="login", channel="app")
        elif roll < 0.95:
            event.update(type="purchase", order_id=f"bo-{i}", amount=f"{rng.uniform(5, 120):.2f}", currency="EUR")
        else:
            event.update(type="support", ticket_id=f"bt-{cid}", action=rng.choice(["opened", "resolved"]))
        out.append(json.dumps(event, separators=(",", ":")).encode())
    return out


# ---- ceilings ------------------------------------------------------------------------------
async def raw_consume(bootstrap: str, topic: str, total: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bench-raw-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=10_000)
    await consumer.start()
    try:
        seen, first = 0, 0.0
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batch.values():
                if not first:
                    first = time.perf_counter()
                for record in records:
                    json.loads(record.value)
                seen += len(records)
        return (seen - 1) / (time.perf_counter() - first)
    finally:
        await consumer.stop()


def faust_bare(bootstrap: str, topic: str, total: int, workdir: Path) -> float:
    done = subprocess.run([sys.executable, "-m", "worker.tools.bench_faust", bootstrap, topic, str(total),
                           str(free_port()), str(workdir / "bare")], capture_output=True, text=True, timeout=600)
    for line in (done.stdout + done.stderr).splitlines():  # faust's worker may log our stdout
        if '"eps"' in line:
            return float(json.loads(line[line.index("{"):])["eps"])
    raise RuntimeError(f"bare faust agent failed: {done.stderr[-2000:]}")


# ---- the worker --------------------------------------------------------------------------------
def start_worker(bootstrap: str, topic: str, workdir: Path, **env: str) -> WorkerProcess:
    """`churn-worker run` on the benchmark topics, with topics and group of its own."""
    tag = f"bench-{uuid.uuid4().hex[:6]}"
    env = {"CHURN_APP_ID": tag, "CHURN_INPUT_TOPICS": topic, "CHURN_DATA_DIR": str(workdir / tag),
           "CHURN_SESSION_TIMEOUT_S": "6", "CHURN_REBALANCE_TIMEOUT_S": "6", "CHURN_LOG_LEVEL": "warning",
           "CHURN_DEAD_LETTER_TOPIC": f"{tag}-dlq", "CHURN_FOLLOW_UP_TOPIC": f"{tag}-follow-up",
           "CHURN_WIN_BACK_TOPIC": f"{tag}-win-back", "CHURN_SERVICE_RECOVERY_TOPIC": f"{tag}-service-recovery",
           **env}
    return WorkerProcess(bootstrap, env, workdir / f"{tag}.log").start()


def steady_eps(run: WorkerProcess, total: int, lo: float = 0.2, hi: float = 0.9,
               timeout: float = 600.0) -> dict[str, Any]:
    """Events/s between lo and hi of the stream (after warm-up, before the tail), and the
    decision points (scored rows: events, and silence deadlines due) per event meanwhile:
    the work the figure stands for. Deadlines are decided as the event-time watermark (the
    slowest partition's event time) passes them, so the watermark's lag behind the stream
    at the two marks (worker_watermark_lag_s) sets how many of them fall in the window."""
    marks: dict[float, tuple[float, float, float, float | None]] = {}
    # before any sample: the last moment the worker was seen not ready, when it had consumed
    # nothing (a window from there, for smoke runs whose stream ends before the first sample,
    # includes the wait for readiness: a lower bound, reported as such)
    previous: tuple[float, float, float, float | None] = (run.unready_at, 0.0, 0.0, None)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        samples = run.metrics()
        done, now = consumed(samples), time.perf_counter()
        rows = sum(v for k, v in samples.items() if k[0] == "churn_scoring_batch_size_sum")
        watermark = samples.get(("churn_event_time_watermark_seconds",), 0.0)
        # the stream's event time at this sample: its events are evenly spread over SPAN_DAYS
        sample = (now, done, rows, T0 + SPAN_DAYS * 86400 * done / total - watermark)
        for share in (lo, hi):
            if share not in marks and done >= share * total:
                marks[share] = sample
        if hi in marks:
            lower_bound = marks[lo] is marks[hi]  # both marks passed between two samples: a short stream
            if lower_bound:
                marks[lo] = previous
            (t0, n0, r0, lag0), (t1, n1, r1, lag1) = marks[lo], marks[hi]
            return {"worker_eps": (n1 - n0) / (t1 - t0), "worker_decisions_per_event": (r1 - r0) / max(n1 - n0, 1),
                    "worker_watermark_lag_s": [lag0, lag1], "worker_eps_lower_bound": lower_bound}
        previous = sample
        time.sleep(0.1)
    raise RuntimeError(f"the worker consumed {run.consumed():.0f} of {total} within {timeout:.0f} s")


def window_eps(run: WorkerProcess, seconds: float) -> float:
    """Events/s over a fixed window once the worker has started consuming (for slow runs)."""
    while run.consumed() < 1:
        time.sleep(0.1)
    n0, t0 = run.consumed(), time.perf_counter()
    time.sleep(seconds)
    return (run.consumed() - n0) / (time.perf_counter() - t0)


# ---- latency at a fixed offered load -----------------------------------------------------------
async def offered_load(bootstrap: str, topic: str, eps: float, seconds: float) -> dict[str, float]:
    """Send `eps` events/s for `seconds` (wall-clock times); every 10th is a 1/5 CSAT of a
    fresh customer, which fires service_recovery at once. Returns customer -> append time."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1)
    await producer.start()
    appended: dict[str, float] = {}
    pending = []
    started = time.perf_counter()
    try:
        for i in range(int(eps * seconds)):
            cid = f"lat-{i:07d}"
            event = {"schema_version": 1, "event_id": f"lat-{i}", "customer_id": cid,
                     "occurred_at": format_time(time.time())}
            if i % 10 == 0:
                event.update(type="support", ticket_id=f"lt-{i}", action="resolved", csat=1)
            else:
                event.update(type="login")
            fut = await producer.send(topic, json.dumps(event).encode(), key=cid.encode())
            if i % 10 == 0:
                pending.append((cid, fut))
            ahead = (i + 1) / eps - (time.perf_counter() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        for cid, fut in pending:
            appended[cid] = (await fut).timestamp / 1000.0
    finally:
        await producer.stop()
    return appended


async def broker_floor(bootstrap: str, topic: str, eps: float, seconds: float,
                       fetch_wait_ms: int) -> list[float]:
    """The broker's own append -> consume delay under the latency step's load: offered_load
    on a fresh topic of its own, read by a bare aiokafka consumer (the worker's fetch wait,
    no group), with no worker running. Measured just before the worker's step rather than
    beside it: a second consumer on the broker slowed the worker's own figure (p50 101-153 ms
    against 69-146 ms, alternating). The embedded broker's delivery slows as a topic grows
    (about 15 ms p50 in its first 5 s at 2,000 events/s, over 100 ms after 30 s), and this is
    the floor under the worker's latency."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    await create_topics(bootstrap, [topic], 4)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=fetch_wait_ms)
    await consumer.start()
    delays: list[float] = []
    expected = int(eps * seconds)

    async def read() -> None:
        while len(delays) < expected:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.time()
            delays.extend(now - record.timestamp / 1000.0 for records in batch.values() for record in records)

    try:
        await consumer.topics()  # fetches the cluster's metadata
        consumer.assign([TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())])
        await consumer.seek_to_beginning()
        reader = asyncio.create_task(read())
        await offered_load(bootstrap, topic, eps, seconds)
        try:
            await asyncio.wait_for(reader, 30)
        except TimeoutError:
            pass  # report what was read
    finally:
        await consumer.stop()
    return delays


async def trigger_times(bootstrap: str, topic: str, expect: int, timeout: float = 60.0) -> dict[str, float]:
    from worker.harness.conditions import read_to_end

    deadline = time.monotonic() + timeout
    while True:
        records = await read_to_end(bootstrap, topic)
        if len(records) >= expect or time.monotonic() > deadline:
            return {record.key.decode(): record.timestamp / 1000.0 for record in records}
        await asyncio.sleep(1)


async def produce_ack_probe(bootstrap: str, topic: str, messages: int = 300) -> float:
    """Median time of one send awaited until the broker acknowledges it (acks=all, no
    linger), as the worker awaits its triggers and changelog writes. A worker that handles
    one event at a time awaits up to two of these per event; on a cluster where they are
    slow, they set its pace."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    times: list[float] = []
    try:
        await (await producer.send(topic, b"warm-up"))
        for i in range(messages):
            started = time.perf_counter()
            await (await producer.send(topic, b"x", key=str(i).encode()))
            times.append(time.perf_counter() - started)
    finally:
        await producer.stop()
    return percentiles(times)["p50"]


async def fetch_wait_probe(bootstrap: str, topic: str, wait_ms: int, messages: int = 200) -> float:
    """Median append-to-consume delay of a bare aiokafka consumer with fetch_max_wait_ms=wait_ms.
    faust fixes 1500 ms; Kafka answers a fetch as soon as data arrives, a broker that holds
    the fetch for the full wait adds that much to every event's latency."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bench-fetch-{wait_ms}-{topic}",
                                auto_offset_reset="latest", fetch_max_wait_ms=wait_ms)
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1)
    await producer.start()
    delays: list[float] = []
    try:
        while not consumer.assignment():
            await asyncio.sleep(0.1)
        await consumer.seek_to_end()

        async def consume() -> None:
            while len(delays) < messages:
                batch = await consumer.getmany(timeout_ms=2000)
                now = time.time()
                delays.extend(now - r.timestamp / 1000.0 for recs in batch.values() for r in recs)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.5)
        for i in range(messages):
            await producer.send(topic, b"x", key=str(i).encode())
            await asyncio.sleep(0.005)
        await asyncio.wait_for(task, 60)
    finally:
        await producer.stop()
        await consumer.stop()
    return sorted(delays)[len(delays) // 2]


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(int(q * len(ordered)), len(ordered) - 1)]  # noqa: E731
    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "n": len(ordered)}


# ---- in-process probes (each in a fresh interpreter, so RSS deltas are honest) -----------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_probe(customers: int) -> dict:
    """What the worker holds per customer: the table entry (key and encoded state bytes, as
    the memory store keeps them) and the deadline index entry."""
    from worker.core.codec import encode_state
    from worker.core.deadlines import DeadlineIndex
    from worker.core.events import parse_valid
    from worker.core.state import EMPTY, apply_event

    def typical(i: int):
        state = EMPTY
        for k, kind in enumerate(("login", "purchase", "login", "login", "support")):
            extra = {"purchase": {"order_id": f"o{i}", "amount": "30.00", "currency": "EUR"},
                     "support": {"ticket_id": f"t{i}", "action": "opened"}}.get(kind, {})
            event = {"schema_version": 1, "event_id": f"m-{i}-{k}", "type": kind, "customer_id": f"c{i}",
                     "occurred_at": format_time(T0 + i % 5000 + k * 86400), **extra}
            state = apply_event(state, parse_valid(json.dumps(event).encode()))
        return state

    sample = typical(1)
    table: dict[bytes, bytes] = {}
    index = DeadlineIndex()
    before = _rss_bytes()
    for i in range(customers):
        key = f"b-{i:07d}".encode()
        table[key] = encode_state(typical(i) if i < 1000 else sample)  # a new bytes object each
        index.set(key, T0 + 86400 * 30 + i)
    after = _rss_bytes()
    return {"memory_customers": customers, "resident_bytes_per_customer": (after - before) / customers,
            "state_bytes": len(encode_state(sample))}


def tick_probe(customers: int, due: int = 1000, repeats: int = 200) -> dict:
    """Cost of one inactivity-timer tick: the deadline index at `customers` entries."""
    from worker.core.deadlines import DeadlineIndex

    index = DeadlineIndex()
    for i in range(customers):
        index.set(f"b-{i:07d}".encode(), T0 + 86400 * 30 + i)
    now = T0 + 86400
    none_due = []
    for _ in range(repeats):
        started = time.perf_counter()
        index.pop_due(now, limit=10_000)
        none_due.append(time.perf_counter() - started)
    with_due = []
    for r in range(20):
        for i in range(due):
            index.set(f"b-{(r * due + i) % customers:07d}".encode(), now - 1 - i)
        started = time.perf_counter()
        popped = index.pop_due(now, limit=10_000)
        with_due.append(time.perf_counter() - started)
        assert len(popped) == due
    return {"tick_customers": customers, "tick_none_due_s": sorted(none_due)[len(none_due) // 2],
            "tick_1000_due_s": sorted(with_due)[len(with_due) // 2], "due": due}


def training_probe(n_events: int) -> dict:
    """Training time on n_events synthetic events, from parsed events to a written artifact."""
    from worker.core.events import parse_valid
    from worker.tools.generate import generate
    from worker.tools.training import build_snapshots, default_cutoffs, train_out_of_time, write_artifact

    customers = max(n_events // 48, 50)  # the generator yields about 48 events per customer over 180 days
    raw = [json.dumps(e).encode() for e in generate(customers, 180, seed=3)][:n_events]
    started = time.perf_counter()
    events = [parse_valid(r) for r in raw]
    parsed = time.perf_counter()
    horizon = 30 * 86400.0
    snaps = build_snapshots(events, default_cutoffs(events[0].occurred_at, events[-1].occurred_at, horizon),
                            horizon, "activity")
    model, metrics = train_out_of_time(snaps)
    with tempfile.TemporaryDirectory() as out:
        write_artifact(Path(out), model, version="bench", snaps=snaps, horizon_s=horizon, churn_on="activity",
                       metrics=metrics, source="bench")
    done = time.perf_counter()
    return {"train_events": len(events), "train_seconds": done - started, "train_parse_seconds": parsed - started}


def core_probe(n_events: int, n_customers: int, batch: int = 2000) -> dict:
    """The pure core alone (parse, fold, features, one predict_proba per batch, decisions,
    state encode/decode) over the benchmark stream: the ceiling of the worker's own code."""
    from worker.config import DEFAULT_POLICY, load_policy
    from worker.core.codec import decode_state, encode_state
    from worker.core.events import parse_valid
    from worker.core.pipeline import Context, Item, process
    from worker.model import shipped_model_dir
    from worker.model.artifact import load_artifact

    stream = bench_stream(n_events, n_customers)
    ctx = Context(load_artifact(shipped_model_dir()), load_policy(DEFAULT_POLICY), 3 * 86400.0,
                  emitted_at=time.time(), event_clock=True)
    table: dict[str, bytes] = {}
    started = time.perf_counter()
    for i in range(0, len(stream), batch):
        items = [Item(e.customer_id, e) for e in map(parse_valid, stream[i:i + batch])]
        states = {c: decode_state(table[c]) for c in {it.customer_id for it in items} if c in table}
        for cid, state in process(items, states, ctx).states.items():
            table[cid] = encode_state(state)
    return {"core_eps": len(stream) / (time.perf_counter() - started)}


def _probe(name: str, *args: int) -> dict:
    code = f"import json, worker.tools.bench as b; print(json.dumps(b.{name}(*{args!r})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"{name} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the run ----------------------------------------------------------------------------------
def run_bench(args) -> int:
    sizes = QUICK if args.quick else Sizes(events=args.events, customers=args.customers)
    workdir = Path(tempfile.mkdtemp(prefix="churn-bench-"))
    broker = None if args.bootstrap else EmbeddedBroker(log_path=workdir / "broker.log").start()
    bootstrap = args.bootstrap if broker is None else broker.bootstrap
    results: dict = {"machine": machine(), "sizes": sizes.__dict__, "bootstrap": "embedded" if broker else bootstrap}
    try:
        results.update(broker_figures(bootstrap, sizes, workdir))
        results.update(_probe("core_probe", sizes.events, sizes.customers))
        results.update(_probe("memory_probe", sizes.memory_customers))
        results.update(_probe("tick_probe", sizes.memory_customers))
        results.update(_probe("training_probe", sizes.train_events))
    except BaseException:
        print(f"benchmark failed; logs kept in {workdir}", file=sys.stderr)
        raise
    finally:
        if broker:
            broker.stop()
    shutil.rmtree(workdir, ignore_errors=True)  # logs and worker data: kept only when a run fails
    results["ratios"] = {
        "worker_over_raw": results["worker_eps"] / results["raw_eps"],
        "worker_over_faust_bare": results["worker_eps"] / results["faust_bare_eps"],
        "worker_over_naive": results["worker_eps"] / results["naive_eps"],
    }
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def broker_figures(bootstrap: str, sizes: Sizes, workdir: Path) -> dict:
    tag = uuid.uuid4().hex[:6]
    topic, live, acks = f"bench-{tag}-events", f"bench-{tag}-live", f"bench-{tag}-acks"
    stream = bench_stream(sizes.events, sizes.customers)
    asyncio.run(create_topics(bootstrap, [topic, live, acks], 4))
    asyncio.run(produce(bootstrap, topic, stream))
    out: dict[str, Any] = {"events": len(stream), "customers": sizes.customers}
    print(f"stream: {len(stream)} events over {sizes.customers} customers on {topic}", flush=True)
    out["raw_eps"] = asyncio.run(raw_consume(bootstrap, topic, len(stream)))
    print(f"raw_eps {out['raw_eps']:.0f}", flush=True)
    out["faust_bare_eps"] = faust_bare(bootstrap, topic, len(stream), workdir)
    print(f"faust_bare_eps {out['faust_bare_eps']:.0f}", flush=True)
    one_at_a_time = {"CHURN_BATCH_SIZE": "1"}

    def windowed(key: str, mode: str, extra: dict) -> float:
        run = start_worker(bootstrap, topic, workdir, CHURN_INPUT_MODE=mode, CHURN_CLOCK="event", **extra)
        try:
            eps = window_eps(run, sizes.naive_window_s)
        finally:
            run.stop()
        print(f"{key} {eps:.0f}", flush=True)
        return eps

    for key, mode, extra in (("naive_stream_eps", "stream", one_at_a_time), ("worker_stream_eps", "stream", {})):
        out[key] = windowed(key, mode, extra)
    out["produce_ack_p50_s"] = asyncio.run(produce_ack_probe(bootstrap, acks))  # beside naive_eps, same phase
    print(f"produce_ack_p50_s {out['produce_ack_p50_s']:.4f}", flush=True)
    naive_before = windowed("naive_eps (before)", "batch", one_at_a_time)
    shipped = start_worker(bootstrap, topic, workdir, CHURN_CLOCK="event")
    try:
        out.update(steady_eps(shipped, len(stream)))
    finally:
        shipped.stop()
    print(f"worker_eps {out['worker_eps']:.0f}", flush=True)
    out["naive_eps_runs"] = [naive_before, windowed("naive_eps (after)", "batch", one_at_a_time)]
    out["naive_eps"] = sum(out["naive_eps_runs"]) / 2
    out.update(latency(bootstrap, live, sizes, workdir))
    probe = f"bench-{tag}-fetch"
    asyncio.run(create_topics(bootstrap, [probe], 4))
    for wait_ms in (1500, 50):
        out[f"broker_fetch_p50_s_wait_{wait_ms}ms"] = asyncio.run(fetch_wait_probe(bootstrap, probe, wait_ms))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def latency(bootstrap: str, topic: str, sizes: Sizes, workdir: Path) -> dict:
    floor = asyncio.run(broker_floor(bootstrap, f"{topic}-floor", sizes.latency_eps, sizes.latency_s,
                                     _worker_fetch_wait_ms()))
    run = start_worker(bootstrap, topic, workdir, CHURN_CLOCK="wall")
    try:
        cpu0, wall0 = cpu_seconds(run.pid), time.perf_counter()
        appended = asyncio.run(offered_load(bootstrap, topic, sizes.latency_eps, sizes.latency_s))
        # how loaded the worker was meanwhile: near one core, it was saturated and the
        # latency is queueing, not the path an event takes
        busy = (cpu_seconds(run.pid) - cpu0) / (time.perf_counter() - wall0)
        fired = asyncio.run(trigger_times(bootstrap, run.env["CHURN_SERVICE_RECOVERY_TOPIC"], len(appended)))
    finally:
        run.stop()
    delays = [fired[c] - t for c, t in appended.items() if c in fired]
    if len(delays) < len(appended):
        raise RuntimeError(f"only {len(delays)} of {len(appended)} triggers arrived")
    p, bare = percentiles(delays), percentiles(floor)
    return {"latency_offered_eps": sizes.latency_eps, "latency_p50_s": p["p50"], "latency_p95_s": p["p95"],
            "latency_p99_s": p["p99"], "latency_samples": p["n"], "latency_worker_cpu": busy,
            "latency_broker_p50_s": bare["p50"], "latency_broker_p99_s": bare["p99"]}


def _worker_fetch_wait_ms() -> int:
    """The fetch wait the benchmark's workers run with (the default, unless set for the bench)."""
    from worker.config import Settings

    return int(os.environ.get("CHURN_FETCH_MAX_WAIT_MS", Settings.model_fields["fetch_max_wait_ms"].default))


def machine() -> str:
    import platform
    cpus = os.cpu_count()
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpus} cores {model}, Python {platform.python_version()}, {platform.system()}"


def _hours(seconds: float | None) -> str:
    return "not sampled" if seconds is None else f"{seconds / 3600:.1f} h"


def table(r: dict) -> str:
    rows = [
        ("raw aiokafka getmany + json.loads", f"{r['raw_eps']:,.0f} events/s"),
        ("bare faust agent (iterate + parse)", f"{r['faust_bare_eps']:,.0f} events/s"),
        ("worker, one event at a time", f"{r['naive_eps']:,.0f} events/s (mean of "
         "{:,.0f} before and {:,.0f} after the next)".format(*r["naive_eps_runs"])),
        ("worker as shipped (steady state)", f"{'at least ' if r.get('worker_eps_lower_bound') else ''}"
         f"{r['worker_eps']:,.0f} events/s "
         f"({r['worker_decisions_per_event']:.2f} decision points per event; watermark "
         f"{' and '.join(_hours(lag) for lag in r['worker_watermark_lag_s'])} behind the stream)"),
        ("the same two through a faust agent (stream mode)",
         f"{r['naive_stream_eps']:,.0f} and {r['worker_stream_eps']:,.0f} events/s"),
        ("the pure core alone, no faust or broker", f"{r['core_eps']:,.0f} events/s"),
        ("worker / raw, / faust bare, / naive",
         "{worker_over_raw:.3f}  {worker_over_faust_bare:.2f}  {worker_over_naive:.1f}".format(**r["ratios"])),
        (f"event -> trigger latency at {r['latency_offered_eps']:,.0f} events/s",
         f"p50 {r['latency_p50_s'] * 1000:.0f} ms, p95 {r['latency_p95_s'] * 1000:.0f} ms, "
         f"p99 {r['latency_p99_s'] * 1000:.0f} ms ({r['latency_samples']} triggers; "
         f"worker CPU meanwhile {r['latency_worker_cpu']:.0%} of a core)"),
        ("the broker's own delivery at that load, just before (bare consumer)",
         f"p50 {r['latency_broker_p50_s'] * 1000:.0f} ms, p99 {r['latency_broker_p99_s'] * 1000:.0f} ms"),
        ("one send awaited to its acknowledgement (acks=all), p50",
         f"{r['produce_ack_p50_s'] * 1000:.2f} ms (the one-at-a-time worker awaits up to two per event)"),
        ("bare consumer delay, fetch wait 1500 ms / 50 ms",
         "p50 {:.0f} ms / {:.0f} ms".format(r["broker_fetch_p50_s_wait_1500ms"] * 1000,
                                            r["broker_fetch_p50_s_wait_50ms"] * 1000)),
        ("resident memory per tracked customer",
         f"{r['resident_bytes_per_customer']:.0f} bytes ({r['sizes']['memory_customers']:,} customers)"),
        ("serialized state of one typical customer", f"{r['state_bytes']} bytes"),
        (f"timer tick at {r['sizes']['memory_customers']:,} customers",
         f"none due {r['tick_none_due_s'] * 1e6:.1f} us, {r['due']} due {r['tick_1000_due_s'] * 1e3:.2f} ms"),
        (f"training on {r['train_events']:,} events", f"{r['train_seconds']:.1f} s "
         f"(of which parsing {r['train_parse_seconds']:.1f} s)"),
    ]
    width = max(len(a) for a, _ in rows)
    return "\n".join([f"churn-worker bench on {r['machine']}", *(f"  {a:<{width}}  {b}" for a, b in rows)])
