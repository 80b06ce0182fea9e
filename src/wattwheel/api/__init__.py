"""FastAPI app, routes, auth, Prometheus metrics and the dashboard."""
