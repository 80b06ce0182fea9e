"""etcd v3 over its JSON gRPC gateway (HTTP, httpx): leases and election keys for redundant
controllers. ``codec`` builds and parses the JSON; ``client`` moves it and adapts it to the
runtime's :class:`~wattwheel.runtime.leader.LeaseStore`."""
