#!/usr/bin/env bash
# System packages the test suite starts its own instances of (each on a free port):
# Mosquitto, PostgreSQL, Chromium (headless, for the dashboard test), snmpd tools, etcd (leader
# election tests; the Debian package etcd-server provides /usr/bin/etcd), Prometheus (the alert
# rules are loaded into a real server and checked with promtool).
# Installs what is missing when run as root with apt; otherwise says what is missing.
set -euo pipefail
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || need+=(etcd-server)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "missing system packages (install them, tests that need them will skip): ${need[*]}" >&2
fi
