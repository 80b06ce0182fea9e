"""Simulation: trace I/O and importers, the plant, the simulation loop, scenarios, reports."""
