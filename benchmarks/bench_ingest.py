"""Telemetry ingestion into the store: samples/s into SQLite (WAL) and PostgreSQL (COPY).

Target (issue 4): at least 50,000 samples/s into each, batched. Each run writes ``--batches``
batches of ``--batch`` samples through ``BufferedStore -> SqlStore.write_telemetry`` (the path the
runtime uses: one transaction per batch, indexes in place) and the figure is the median over
``--runs`` runs. PostgreSQL is a throw-away server this script starts itself (initdb into a temp
dir, as the ``postgres`` user when run as root) with default durability settings (fsync on).

    .venv/bin/python benchmarks/bench_ingest.py [--backend both|sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from services_pg import PgServer, pg_bin_dir  # noqa: E402
from wattwheel.adapters.store import BufferedStore, SqlStore  # noqa: E402
from wattwheel.domain.telemetry import PowerSample  # noqa: E402

TARGET_SAMPLES_PER_S = 50_000


def make_batches(n_batches: int, batch: int, n_racks: int = 1000) -> list[list[PowerSample]]:
    """Realistic rows: 1,000 racks x 40 servers, one reading per server per second."""
    out = []
    k = 0
    for _ in range(n_batches):
        rows = []
        for _ in range(batch):
            rack = k % n_racks
            rows.append(
                PowerSample(
                    "mqtt",
                    f"rack-{rack:04d}",
                    f"srv-{(k // n_racks) % 40:02d}",
                    1.7e9 + k / (n_racks * 40),
                    250.0 + (k % 97),
                    "server",
                )
            )
            k += 1
        out.append(rows)
    return out


def run_once(store: BufferedStore, batches: list[list[PowerSample]]) -> float:
    """Samples/s for writing every batch (each acknowledged, i.e. committed, before the next)."""
    t0 = time.perf_counter()
    for b in batches:
        if not store.write_telemetry(b):
            raise RuntimeError("batch refused by the buffer")
    elapsed = time.perf_counter() - t0
    if store.pending_items:
        raise RuntimeError(f"{store.pending_items} samples still pending: the database failed")
    return sum(len(b) for b in batches) / elapsed


def bench(url: str, label: str, batches: list[list[PowerSample]], runs: int) -> float:
    store = BufferedStore(SqlStore.open(url))
    try:
        store.write_telemetry(batches[0])  # warm-up: connection, prepared paths
        rates = [run_once(store, batches) for _ in range(runs)]
        total = store.counts()["telemetry"]
    finally:
        store.close()
    med = statistics.median(rates)
    verdict = "OK" if med >= TARGET_SAMPLES_PER_S else "BELOW TARGET"
    print(
        f"{label:<11} median {med:>10,.0f} samples/s   (min {min(rates):,.0f}, "
        f"max {max(rates):,.0f}; {runs} runs; {total:,} rows stored)   {verdict}"
    )
    return med


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=["both", "sqlite", "postgresql"], default="both")
    ap.add_argument("--batch", type=int, default=10_000, help="samples per batch")
    ap.add_argument("--batches", type=int, default=10, help="batches per run")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    batches = make_batches(args.batches, args.batch)
    print(
        f"telemetry ingestion: {args.batches} batches x {args.batch:,} samples per run, "
        f"median of {args.runs} runs; target {TARGET_SAMPLES_PER_S:,} samples/s"
    )
    results = []
    if args.backend in ("both", "sqlite"):
        with tempfile.TemporaryDirectory() as tmp:
            results.append(bench(f"sqlite:///{tmp}/bench.db", "sqlite-wal", batches, args.runs))
    if args.backend in ("both", "postgresql"):
        if pg_bin_dir() is None:
            print("postgresql  skipped: no PostgreSQL server binaries installed")
        else:
            server = PgServer(fast=False)
            try:
                server.start()
                results.append(bench(server.url, "postgresql", batches, args.runs))
            finally:
                server.destroy()
    return 0 if all(r >= TARGET_SAMPLES_PER_S for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
