"""Device and storage adapters: each a pure codec plus a thin client."""
