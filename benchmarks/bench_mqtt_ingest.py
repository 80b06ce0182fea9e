"""MQTT telemetry ingestion: samples/s from publisher through Mosquitto to the ingester's sink.

A throw-away Mosquitto (started here on a free port, no persistence) carries ``--samples``
samples published by :class:`MqttPublisher` (QoS 1, ``--per-message`` samples per batch
payload) to :class:`MqttIngester` (QoS 1, manual ack after the sink, persistent session) with
a sink that only counts. The figure is the median over ``--runs`` runs of samples / (time from
the first submit to the last sample handed to the sink). ``--per-message 1`` measures the
one-sample-per-message worst case.

    .venv/bin/python benchmarks/bench_mqtt_ingest.py [--samples 200000] [--per-message 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from services import Mosquitto, free_port  # noqa: E402
from wattwheel.adapters.mqtt.client import BrokerAddress, MqttIngester, MqttPublisher  # noqa: E402
from wattwheel.adapters.mqtt.codec import telemetry_filter  # noqa: E402
from wattwheel.domain.telemetry import PowerSample  # noqa: E402

SITE = "bench"
#: Broker -> ingester in-flight window (Mosquitto ``max_inflight_messages``) and the ingester's
#: ``batch_max_messages``: a batch is acknowledged as a whole, so they must match.
WINDOW = 200


def make_samples(n: int, n_racks: int = 1000) -> list[PowerSample]:
    """Rack-major rows, as a site publisher produces them (one rack's servers together)."""
    per_rack = max(n // n_racks, 1)
    return [
        PowerSample("bench", f"r{i // per_rack}", f"s{i % per_rack}", 1.7e9 + i, 400.0 + i % 97)
        for i in range(n)
    ]


async def one_run(port: int, samples: list[PowerSample], per_message: int, run: int) -> float:
    received = 0
    done = asyncio.Event()

    async def sink(batch: list[PowerSample]) -> None:
        nonlocal received
        received += len(batch)
        if received >= len(samples):
            done.set()

    broker = BrokerAddress(port=port)
    ingester = MqttIngester(
        broker,
        telemetry_filter(SITE),
        sink,
        client_id=f"bench-in-{run}",
        batch_max_samples=20_000,
        batch_max_messages=WINDOW,
    )
    publisher = MqttPublisher(
        broker,
        SITE,
        client_id=f"bench-out-{run}",
        max_samples_per_message=per_message,
        max_buffered_samples=len(samples) + 1,
    )
    tasks = [asyncio.create_task(ingester.run()), asyncio.create_task(publisher.run())]
    try:
        await asyncio.wait_for(ingester.subscribed.wait(), 10)
        await asyncio.wait_for(publisher.connected.wait(), 10)
        start = time.perf_counter()
        publisher.submit(samples)
        try:
            await asyncio.wait_for(done.wait(), 60)
        except TimeoutError:
            raise SystemExit(
                f"timed out: received {received}, {ingester.stats}, "
                f"published {publisher.published_samples}"
            ) from None
        elapsed = time.perf_counter() - start
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if ingester.stats.bad_messages or received != len(samples):
        raise SystemExit(f"lost or bad samples: got {received}, stats {ingester.stats}")
    return len(samples) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--per-message", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    samples = make_samples(args.samples)
    with tempfile.TemporaryDirectory() as work:
        broker = Mosquitto(Path(work), free_port(), f"max_inflight_messages {WINDOW}\n")
        broker.start()
        try:
            rates = [
                asyncio.run(one_run(broker.port, samples, args.per_message, i))
                for i in range(args.runs)
            ]
        finally:
            broker.stop()
    print(
        f"mqtt ingest, {args.samples} samples, {args.per_message} samples/message, "
        f"QoS 1, ack after sink: median {statistics.median(rates):,.0f} samples/s "
        f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})"
    )


if __name__ == "__main__":
    main()
