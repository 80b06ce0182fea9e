"""Named cost profiles: the same site priced differently, to test whether a policy's lead holds.

A controller that is cheapest only under the prices it was tuned for has not shown much. Each
profile here rescales the site file's ``[costs]`` weights (a factor per metric) or prices one
metric like another (``overload`` priced like capping). The site's own weights stay the
reference: ``default`` changes nothing. Profiles apply to the planner as well as to the bill,
because the policies plan with ``SiteParams.costs``.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from wattwheel.domain.errors import ConfigError


@dataclass(frozen=True)
class CostProfile:
    """A named change to a site's cost weights.

    Attributes:
        name: the profile's stable name (used in ``bench.json`` and on the command line).
        description: one line saying what it models.
        factors: metric name -> factor applied to the site's weight for it.
        priced_like: metric name -> another metric whose (already scaled) weight it takes.
    """

    name: str
    description: str
    factors: Mapping[str, float] = field(default_factory=dict)
    priced_like: Mapping[str, str] = field(default_factory=dict)

    def apply(self, costs: Mapping[str, float]) -> dict[str, float]:
        """The site's weights under this profile (metrics without a weight stay at zero)."""
        out = {k: float(v) for k, v in costs.items()}
        for metric, factor in self.factors.items():
            if metric in out:
                out[metric] = out[metric] * factor
        for metric, like in self.priced_like.items():
            out[metric] = out.get(like, 0.0)
        return out


PROFILES: dict[str, CostProfile] = {
    p.name: p
    for p in (
        CostProfile("default", "the site file's own weights"),
        CostProfile(
            "capping-x3",
            "lost throughput three times dearer (capping non-critical work)",
            factors={"capped_energy_kwh": 3.0},
        ),
        CostProfile(
            "shifting-x10",
            "moving or deferring work ten times dearer (migration, cache warm-up, SLOs)",
            factors={"shifted_energy_kwh": 10.0, "deferred_energy_kwh": 10.0},
        ),
        CostProfile(
            "standby-x2",
            "flywheel losses and wear twice as dear (energy price, bearing wear)",
            factors={"kes_losses_kwh": 2.0, "kes_throughput_kwh": 2.0},
        ),
        CostProfile(
            "overload-as-capping",
            "drawing over a feed rating priced like capping (a tolerant feed)",
            priced_like={"overload_energy_kwh": "capped_energy_kwh"},
        ),
    )
}


def profile(name: str) -> CostProfile:
    """The profile called ``name``; a ConfigError listing the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise ConfigError("--profile", name, f"not a cost profile (known: {known})") from None


def parse_profiles(spec: str) -> tuple[CostProfile, ...]:
    """``"all"`` or a comma-separated list of names, in order, without repeats."""
    names: Sequence[str] = list(PROFILES) if spec.strip() == "all" else spec.split(",")
    out: list[CostProfile] = []
    for raw in names:
        name = raw.strip()
        if not name:
            raise ConfigError("--profiles", spec, "empty profile name")
        prof = profile(name)
        if prof not in out:
            out.append(prof)
    return tuple(out)
