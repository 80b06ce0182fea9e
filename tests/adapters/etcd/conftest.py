"""Fixtures of the etcd adapter tests."""

from etcd_server import etcd  # noqa: F401
