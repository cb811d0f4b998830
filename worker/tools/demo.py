"""`churn-worker demo`: embedded broker + real worker + a synthetic stream, then a summary.

Runs the worker as its own process (`python -m worker run`) with the event-time
clock, so months of history replay in a minute or two and silence fires
win-backs just as it would live. Stops by itself unless --keep-running.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from worker.config import load_settings
from worker.harness.broker import EmbeddedBroker
from worker.harness.conditions import read_to_end
from worker.harness.process import WorkerProcess, consumed
from worker.tools.generate import corrupt, generate
from worker.tools.kafka_io import create_topics, produce

WORKDIR = Path("demo-run")
BAD_FRACTION = 0.005  # a few malformed messages, to show the dead-letter topic at work


def run_demo(args) -> int:
    settings = load_settings()
    shutil.rmtree(WORKDIR, ignore_errors=True)
    WORKDIR.mkdir()
    broker = None
    if settings.kafka_bootstrap:
        bootstrap = settings.kafka_bootstrap
        print(f"[1/5] using the Kafka cluster at {bootstrap}")
    else:
        broker = EmbeddedBroker(log_path=WORKDIR / "broker.log").start()
        bootstrap = broker.bootstrap
        print(f"[1/5] embedded broker (Tansu, Kafka protocol, in memory) on {bootstrap}")
    worker = None
    try:
        events = generate(args.customers, args.days, args.seed, args.start)
        messages = corrupt(events, BAD_FRACTION, args.seed)
        print(f"[2/5] generated {len(events)} events for {args.customers} customers over {args.days} days "
              f"(+ malformed and redelivered messages: {len(messages)} messages in all)")
        topics = [*settings.input_topics, settings.dead_letter_topic, *settings.trigger_topics.values()]
        asyncio.run(create_topics(bootstrap, topics, settings.topic_partitions))
        worker = WorkerProcess(bootstrap, {
            "CHURN_CLOCK": "event", "CHURN_IDLE_SOURCE_S": "3", "CHURN_DATA_DIR": str((WORKDIR / "data").resolve()),
            "CHURN_APP_ID": f"{settings.app_id}-demo-{int(time.time())}",
            "CHURN_MODEL_DIR": str(settings.model_dir.resolve()),
            "CHURN_SESSION_TIMEOUT_S": "10", "CHURN_REBALANCE_TIMEOUT_S": "10"}, WORKDIR / "worker.log")
        port = worker.port
        print(f"[3/5] worker started (event-time clock); joining its consumer group... log: {WORKDIR}/worker.log")
        worker.start()
        print(f"      ready: http://127.0.0.1:{port}/metrics  /health  /ready  /customers/<id>")
        with tqdm(total=len(messages), unit="ev", desc=f"[4/5] produce -> {settings.input_topics[0]}") as bar:
            asyncio.run(produce(bootstrap, settings.input_topics[0], messages, progress=bar))
        with tqdm(total=len(messages), unit="ev", desc="worker consumed") as bar:
            samples = worker.wait_consumed(len(messages), progress=bar)
        print("[5/5] stream processed; reading the trigger and dead-letter topics back")
        summarize(bootstrap, settings, samples, port)
        if args.keep_running:
            print("--keep-running: broker and worker stay up; Ctrl-C to stop")
            worker.wait()
    finally:
        if worker:
            worker.stop(20)
        if broker:
            broker.stop()
    return 0


def summarize(bootstrap: str, settings, samples: dict, port: int) -> None:
    by_type = asyncio.run(_read_all(bootstrap, settings))
    dead = by_type.pop("dead_letter")
    reasons = Counter(dict(r.headers).get("dlq.reason", b"?").decode() for r in dead)
    print("\n=== summary ===")
    print(f"events consumed:  {int(consumed(samples))}  "
          f"(applied {int(_outcome(samples, 'applied'))}, duplicates {int(_outcome(samples, 'duplicate'))})")
    print(f"dead-lettered:    {len(dead)}  {dict(reasons)}  -> topic {settings.dead_letter_topic}")
    for kind, records in by_type.items():
        print(f"{kind:17} {len(records):6}  -> topic {settings.trigger_topics[kind]}")
    print(f"metrics were at   http://127.0.0.1:{port}/metrics  (churn_* series)")
    for kind, records in by_type.items():
        if records:
            sample = json.loads(records[len(records) // 2].value)
            sample["state"] = {k: sample["state"][k] for k in list(sample["state"])[:6]} | {"...": "..."}
            print(f"\n--- a {kind} trigger ---\n{json.dumps(sample, indent=1)}")


def _outcome(samples: dict, outcome: str) -> float:
    return sum(v for k, v in samples.items()
               if k[0] == "churn_events_consumed_total" and dict(k[1:]).get("outcome") == outcome)


async def _read_all(bootstrap: str, settings) -> dict[str, list]:
    out = {kind: await read_to_end(bootstrap, topic) for kind, topic in settings.trigger_topics.items()}
    out["dead_letter"] = await read_to_end(bootstrap, settings.dead_letter_topic)
    return out
