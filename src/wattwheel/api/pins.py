"""What a cap pin may ask for. A pin (rack or domain) is the most that rack or domain may draw;
the controller meets it by capping non-critical servers only. A pin below the critical load the
rack or domain carries now could only be met by capping critical servers, so the API refuses it
with 409, naming that load and the smallest pin it would take.

The critical load is estimated as the controller does for a rack without per-server readings:
the rack's measured power times the share of its servers the inventory marks critical. The loop
never caps a critical server whatever the pin (``runtime/actuate.py``), so a critical load that
grows after the pin was set is served, and the pin is then not met.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wattwheel.runtime.inventory import Inventory
from wattwheel.runtime.state import LiveState


@dataclass(frozen=True)
class CriticalLoad:
    """The critical part of a rack's or domain's draw now (kW) and how it was estimated."""

    critical_kw: float
    power_kw: float
    critical_servers: int
    servers: int


class PinGuard:
    """Critical load per rack and domain from the inventory and the live rack readings."""

    def __init__(self, inventory: Inventory, state: LiveState) -> None:
        self.state = state
        n = np.bincount(inventory.server_rack, minlength=inventory.n_racks)
        crit = np.bincount(
            inventory.server_rack,
            weights=inventory.critical.astype(float),
            minlength=inventory.n_racks,
        )
        self._servers = {r: (int(crit[i]), int(n[i])) for i, r in enumerate(inventory.rack_ids)}

    def critical_load(self, scope: str, target: str) -> CriticalLoad | None:
        """None when the target has no reading yet (or is unknown to the inventory)."""
        racks = [
            r
            for r in self.state.racks()
            if (r.rack_id == target if scope == "rack" else r.domain_id == target)
            and r.rack_id in self._servers
            and math.isfinite(r.power_kw)
        ]
        if not racks:
            return None
        crit_kw = power_kw = 0.0
        n_crit = n_all = 0
        for rack in racks:
            c, n = self._servers[rack.rack_id]
            crit_kw += rack.power_kw * c / max(n, 1)
            power_kw += rack.power_kw
            n_crit, n_all = n_crit + c, n_all + n
        return CriticalLoad(crit_kw, power_kw, n_crit, n_all)

    def refusal(self, scope: str, target: str, cap_kw: float) -> str | None:
        """Why a pin of ``cap_kw`` on ``target`` would cap critical servers (None: it would not)."""
        load = self.critical_load(scope, target)
        if load is None or cap_kw >= load.critical_kw:
            return None
        return (
            f"{scope} {target} carries {load.critical_kw:.1f} kW of critical load now "
            f"({load.critical_servers} of its {load.servers} servers are critical; it draws "
            f"{load.power_kw:.1f} kW): a pin at {cap_kw:g} kW could only be met by capping "
            f"critical servers, which wattwheel never does. Pin at least "
            f"{math.ceil(load.critical_kw * 10) / 10:g} kW."
        )
