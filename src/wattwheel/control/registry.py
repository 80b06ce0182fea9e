"""Policy names -> constructors (the one place the CLI and the runtime look them up)."""

from __future__ import annotations

from collections.abc import Callable

from wattwheel.control.base import Policy
from wattwheel.control.converter_policy import ConverterPolicy
from wattwheel.control.predictive import PredictivePolicy
from wattwheel.control.seed import SeedPolicy
from wattwheel.control.simple import NonePolicy, ReactivePolicy
from wattwheel.domain.converter import ConverterSpec
from wattwheel.domain.errors import ConfigError
from wattwheel.domain.site import SiteParams

POLICIES: dict[str, Callable[[SiteParams], Policy]] = {
    "none": NonePolicy,
    "reactive": ReactivePolicy,
    "seed": SeedPolicy,
    "predictive": PredictivePolicy,
    "oracle": lambda site: PredictivePolicy(site, name="oracle"),
    # Issue 10: storage through the flywheel converter's own loop (HPMC sets parameters).
    "converter": ConverterPolicy,
    "converter-parallel": lambda site: ConverterPolicy(
        site, ConverterSpec(topology="parallel"), name="converter-parallel"
    ),
    "converter+rampup": lambda site: ConverterPolicy(
        site, name="converter+rampup", job_rampup=True
    ),
}


def make_policy(name: str, site: SiteParams) -> Policy:
    try:
        factory = POLICIES[name]
    except KeyError:
        raise ConfigError(
            "policy", name, f"unknown policy; choose one of {sorted(POLICIES)}"
        ) from None
    return factory(site)
