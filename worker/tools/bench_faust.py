"""The faust ceiling for the benchmark: a bare agent that only iterates a topic and
parses JSON. Run as `python -m worker.tools.bench_faust BOOTSTRAP TOPIC N PORT DATADIR`; prints
one JSON line with the rate between its first and N-th event, then exits."""
from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    import faust

    bootstrap, topic, total, port, datadir = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    app = faust.App(f"bench-bare-{os.getpid()}", broker=f"kafka://{bootstrap}", store="memory://", datadir=datadir,
                    web_port=port, web_bind="127.0.0.1", web_host="127.0.0.1", autodiscover=False,
                    broker_session_timeout=6, broker_rebalance_timeout=6, broker_heartbeat_interval=2,
                    consumer_auto_offset_reset="earliest", topic_allow_declare=False)
    source = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    seen = {"n": 0, "first": 0.0}

    @app.agent(source)
    async def bare(stream):
        async for value in stream:
            json.loads(value)
            seen["n"] += 1
            if seen["n"] == 1:
                seen["first"] = time.perf_counter()
            elif seen["n"] == total:
                elapsed = time.perf_counter() - seen["first"]
                print(json.dumps({"events": total, "seconds": elapsed, "eps": (total - 1) / elapsed}), flush=True)
                os._exit(0)

    from faust.worker import Worker
    Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
