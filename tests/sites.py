"""Small site files for the tests: one place to write the minimal site a unit test needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from wattwheel.domain.site import SiteParams, parse_site, resolve_site

ONE_DOMAIN = {"A": ("a1",)}


def site_toml(
    name: str, domains: Mapping[str, Sequence[str]] = ONE_DOMAIN, **site_keys: float
) -> str:
    """A site file with these domains (name -> racks), each on a 100 kW feed, a 50 kW reserve
    and one 20 kW / 1 kWh flywheel module per domain; ``site_keys`` go in its ``[site]``
    table."""
    extra = "".join(f"{key} = {value}\n" for key, value in site_keys.items())
    tables = "".join(
        f'[[domains]]\nname = "{domain}"\nracks = {list(racks)!r}\nprimary_capacity_kw = 100\n'
        for domain, racks in domains.items()
    ).replace("'", '"')
    return f"""
[site]
name = "{name}"
{extra}[reserve]
capacity_kw = 50
[domain_defaults.kes]
modules = 1
module_power_kw = 20
module_energy_kwh = 1
{tables}"""


def one_domain_site(name: str, **site_keys: float) -> SiteParams:
    """:func:`site_toml` with one domain ``A`` (rack ``a1``), parsed and resolved (the
    trace's one column at 100 kW)."""
    return resolve_site(parse_site(site_toml(name, **site_keys)), {"A": np.array([100.0])})
