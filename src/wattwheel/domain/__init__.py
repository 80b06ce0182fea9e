"""Pure domain model: site, physics, allocation, metrics. No I/O, no clock."""
