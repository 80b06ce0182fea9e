"""A virtual Redfish service (server BMCs and a rack PDU) whose power follows a demand source."""

from wattwheel.emulate.redfish.runner import RunningServer, serve, serve_in_thread
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
    "build_redfish_app",
    "serve",
    "serve_in_thread",
]
