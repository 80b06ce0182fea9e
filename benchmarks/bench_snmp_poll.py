"""SNMP polling of emulated APC PDUs: time to read N racks' PDUs concurrently (one engine).

Starts :func:`wattwheel.emulate.snmp.start_snmp_emulator` with ``--racks`` PDUs (8 outlets
each) in this process and reads all of them with :class:`ApcPduClient` (GETBULK requests,
at most 64 in flight) sharing one SNMP engine. Prints the median over ``--runs`` polls
of the whole site.

    .venv/bin/python benchmarks/bench_snmp_poll.py [--racks 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from pysnmp.hlapi.v3arch.asyncio import SnmpEngine

from wattwheel.adapters.snmp.client import ApcPduClient, PduTarget
from wattwheel.emulate.snmp import StaticRackPower, start_snmp_emulator


async def bench(n_racks: int, runs: int) -> list[float]:
    racks = [f"r{i}" for i in range(n_racks)]
    emulator = await start_snmp_emulator(racks, StaticRackPower(dict.fromkeys(racks, 5000.0)), 0)
    engine = SnmpEngine()
    limiter = asyncio.Semaphore(64)  # requests in flight, shared by all clients
    clients = [
        ApcPduClient(
            PduTarget(
                r, "127.0.0.1", emulator.port, community=r, timeout_s=60.0, read_deadline_s=60.0
            ),
            engine=engine,
            limiter=limiter,
        )
        for r in racks
    ]
    durations = []
    try:
        for _ in range(runs):
            start = time.perf_counter()
            results = await asyncio.gather(*(c.read() for c in clients))
            durations.append(time.perf_counter() - start)
            if any(len(samples) != 9 for samples in results):
                raise SystemExit("a PDU did not answer completely")
    finally:
        engine.close_dispatcher()
        await emulator.stop()
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--racks", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    durations = asyncio.run(bench(args.racks, args.runs))
    median_s = statistics.median(durations)
    print(
        f"snmp poll of {args.racks} emulated PDUs (agent in the same process): median "
        f"{median_s * 1000:.0f} ms, {args.racks / median_s:.0f} PDUs/s "
        f"(runs: {', '.join(f'{d * 1000:.0f}' for d in durations)} ms)"
    )


if __name__ == "__main__":
    main()
