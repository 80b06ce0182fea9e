"""The flywheel converter's own loop: how its measurement latency, filter bandwidth and
topology decide whether the grid ramp limit holds, on ``ai-training-realistic`` with the HPMC
acting on 1-s-old measurements (issue 10).

    .venv/bin/python benchmarks/bench_converter.py [--latencies-ms 10,20,50] [--bandwidths-hz 10,2]

Prints, per (topology, latency, bandwidth), the share of 100 ms steps over the ramp limit, the
p99 and max grid ramp, the 0.1-5 Hz band power vs ``none``, the site peak and the storage
losses. Figures are deterministic (no timing).
"""

from __future__ import annotations

import argparse

from wattwheel.control.converter_policy import ConverterPolicy
from wattwheel.control.simple import NonePolicy
from wattwheel.domain.converter import TOPOLOGIES, ConverterSpec
from wattwheel.sim.bench import add_grid_signal_metrics
from wattwheel.sim.scenario import bundled_site, load_scenario, with_latency
from wattwheel.sim.simulator import SimResult, simulate


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latencies-ms", default="10,20,50")
    parser.add_argument("--bandwidths-hz", default="10,2")
    parser.add_argument("--hpmc-latency-s", type=float, default=1.0)
    args = parser.parse_args()
    sc = with_latency(load_scenario(bundled_site("ai-training-realistic")), args.hpmc_latency_s)
    results: dict[str, SimResult] = {"none": simulate(sc, NonePolicy(sc.site))}
    for topology in TOPOLOGIES:
        for lat_ms in _floats(args.latencies_ms):
            for bw in _floats(args.bandwidths_hz):
                spec = ConverterSpec(
                    measurement_latency_s=lat_ms / 1000.0, bandwidth_hz=bw, topology=topology
                )
                name = f"{topology} {lat_ms:g} ms {bw:g} Hz"
                results[name] = simulate(sc, ConverterPolicy(sc.site, spec, name=name))
    add_grid_signal_metrics(sc, results)
    print(
        f"HPMC latency {args.hpmc_latency_s:g} s; ramp limit "
        f"{sc.site.max_grid_ramp_kw_per_s} kW/s per feed; step {sc.dt_s:g} s"
    )
    head = "| converter | over limit | p99 kW/s | max kW/s | band dB | peak kW | losses kWh |"
    print(head)
    print("|---" * 7 + "|")
    for name, res in results.items():
        m = res.site_metrics
        print(
            f"| {name} | {m['ramp_over_limit_seconds_share']:.4f} | "
            f"{m['p99_grid_ramp_kw_per_s']:.2f} | {m['max_grid_ramp_kw_per_s']:.1f} | "
            f"{m.get('grid_band_power_reduction_db', float('nan')):.1f} | "
            f"{m['peak_grid_kw']:.1f} | {m['kes_losses_kwh']:.3f} |"
        )


if __name__ == "__main__":
    main()
