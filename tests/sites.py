"""Small site files for the tests: one place to write the minimal site a unit test needs."""

from __future__ import annotations

import numpy as np

from wattwheel.domain.site import SiteParams, parse_site, resolve_site

ONE_DOMAIN_KW = 100.0


def one_domain_toml(name: str, **site_keys: float) -> str:
    """A site file with one domain ``A`` (one rack ``a1`` on a 100 kW feed), a 50 kW reserve
    and one 20 kW / 1 kWh flywheel module; ``site_keys`` go in its ``[site]`` table."""
    extra = "".join(f"{key} = {value}\n" for key, value in site_keys.items())
    return f"""
[site]
name = "{name}"
{extra}[reserve]
capacity_kw = 50
[domain_defaults.kes]
modules = 1
module_power_kw = 20
module_energy_kwh = 1
[[domains]]
name = "A"
racks = ["a1"]
primary_capacity_kw = {ONE_DOMAIN_KW:g}
"""


def one_domain_site(name: str, **site_keys: float) -> SiteParams:
    """:func:`one_domain_toml`, parsed and resolved (the trace's one column at 100 kW)."""
    return resolve_site(parse_site(one_domain_toml(name, **site_keys)), {"A": np.array([100.0])})
