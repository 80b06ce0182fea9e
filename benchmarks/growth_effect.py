"""What the new servers' load looks like: ``--growth traces`` (donor racks of other PDUs, shifted
by whole days) against ``--growth naive`` (the existing racks multiplied), without simulating.

    .venv/bin/python benchmarks/growth_effect.py [--days 31] [--extra 2,5,10,20]

For each growth, per method: the site's peak demand, the sum of the domains' own peaks, the
energy and the hours above the domains' primary feeds (the site as built, resolved on the
baseline), and how the *added* load moves with the existing one (correlation; 1 = in lockstep).
"""

from __future__ import annotations

import argparse

import numpy as np

from wattwheel.cli.capacity_cmds import load_window
from wattwheel.sim.growth import baseline_servers, grown_scenario
from wattwheel.sim.scenario import bundled_site


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=float, default=None, help="window (default: all)")
    parser.add_argument("--extra", default="2,5,10,20", help="extra servers, % of baseline")
    parser.add_argument("--servers-per-rack", type=int, default=1000)
    args = parser.parse_args()
    base, _ = load_window(bundled_site(), None, 0.0, args.days)
    spr = args.servers_per_rack
    n0 = baseline_servers(base, spr)
    primary = base.site.primary_kw
    dt_h = base.dt_s / 3600.0
    print(
        f"{base.site.name}: {base.demand_kw.shape[0]} steps, baseline {n0} servers, "
        f"site peak {base.demand_kw.sum(axis=1).max():,.0f} kW"
    )
    print(
        "| extra servers | growth | site peak kW | sum of domain peaks kW | "
        "energy above feeds kWh | hours above a feed | added vs existing load, correlation |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    for pct in (float(x) for x in args.extra.split(",")):
        n = int(round(n0 * (1 + pct / 100.0)))
        for method in ("traces", "naive"):
            grown = grown_scenario(base, n, spr, method)  # type: ignore[arg-type]
            over = np.maximum(grown.demand_kw - primary, 0.0)
            added = (grown.demand_kw - base.demand_kw).sum(axis=1)
            corr = float(np.corrcoef(added, base.demand_kw.sum(axis=1))[0, 1])
            print(
                f"| +{pct:g} % | {method} | {grown.demand_kw.sum(axis=1).max():,.0f} | "
                f"{grown.demand_kw.max(axis=0).sum():,.0f} | {over.sum() * dt_h:,.0f} | "
                f"{(over.max(axis=1) > 0).sum() * dt_h:,.1f} | "
                f"{corr:.2f} |"
            )


if __name__ == "__main__":
    main()
