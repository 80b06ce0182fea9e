"""A virtual Redfish service (server BMCs and rack PDUs) whose power follows a demand source.

Each server is a chassis whose consumed power is min(demand, power limit), where demand comes
from a `PowerSource` (`power_w(server_id) -> float`, called on every GET) and the limit is
whatever a client PATCHed through `Controls/PowerLimit` or `Power`. Each rack has a PDU with
one outlet per server; switching an outlet off drops that server to 0 W.

    app = build_redfish_app(["srv-1", "srv-2"], source, racks={"r1": ["srv-1", "srv-2"]})
    with serve_in_thread(app) as bmc:          # tests, demos: a free port, a daemon thread
        client = RedfishClient(bmc.url, username="admin", password="wattwheel")
    await serve(app, "0.0.0.0", 8443)          # inside `wattwheel emulate`'s event loop

DMTF's redfish-service-validator reports 0 FAIL against it (tests/emulate/redfish).
"""

from wattwheel.emulate.redfish.runner import RunningServer, TlsFiles, serve, serve_in_thread
from wattwheel.emulate.redfish.service import RedfishService, build_redfish_app
from wattwheel.emulate.redfish.source import PowerSource, StaticPowerSource
from wattwheel.emulate.redfish.state import LimitRange, SiteState

__all__ = [
    "LimitRange",
    "PowerSource",
    "RedfishService",
    "RunningServer",
    "SiteState",
    "StaticPowerSource",
    "TlsFiles",
    "build_redfish_app",
    "serve",
    "serve_in_thread",
]
