"""The device map's ``mqtt`` section -> a :class:`BrokerAddress`, and the ingester's client id.

```json
"mqtt": {"host": "127.0.0.1", "port": 8883, "site": "cella-oversub",
         "username": "wattwheel", "password_file": "/etc/wattwheel/mqtt-password",
         "tls": {"ca_file": "/etc/wattwheel/broker-ca.pem",
                 "cert_file": null, "key_file": null}}
```

``username``/``password`` (or ``password_file``, whose first line is the password, so the
secret need not sit in the map) log in to a broker that refuses anonymous clients; ``tls``
turns on TLS, verifying the broker's certificate against ``ca_file`` (the system's CAs when
absent) and, with ``cert_file``/``key_file``, presenting a client certificate. A problem is a
:class:`ConfigError` naming the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wattwheel.adapters.mqtt.client import BrokerAddress, TlsOptions
from wattwheel.domain.errors import ConfigError

_KEYS = {"host", "port", "site", "username", "password", "password_file", "tls", "keepalive_s"}
_TLS_KEYS = {"ca_file", "cert_file", "key_file"}


def broker_from_map(section: Mapping[str, Any], where: str = "devices.mqtt") -> BrokerAddress:
    """The broker the map's ``mqtt`` section names (host, port and site required)."""
    unknown = sorted(set(section) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", section[unknown[0]], "unknown key")
    for key in ("host", "port", "site"):
        if key not in section:
            raise ConfigError(f"{where}.{key}", None, "missing")
    port = section["port"]
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"{where}.port", port, "must be an integer port 1-65535")
    password = section.get("password")
    if "password_file" in section:
        if password is not None:
            raise ConfigError(
                f"{where}.password_file",
                section["password_file"],
                "give one of password, password_file",
            )
        password = _read_secret(f"{where}.password_file", section["password_file"])
    username = section.get("username")
    if password is not None and username is None:
        raise ConfigError(f"{where}.username", None, "a password needs a username")
    return BrokerAddress(
        str(section["host"]),
        port,
        username=None if username is None else str(username),
        password=password,
        keepalive_s=int(section.get("keepalive_s", 10)),
        tls=_tls(f"{where}.tls", section.get("tls")),
    )


def _read_secret(key: str, path: object) -> str:
    try:
        lines = Path(str(path)).read_text().splitlines()
    except OSError as exc:
        raise ConfigError(key, path, f"cannot be read: {exc.strerror}") from None
    if not lines or not lines[0]:
        raise ConfigError(key, path, "is empty (the first line is the password)")
    return lines[0]


def _tls(key: str, value: object) -> TlsOptions | None:
    if value is None or value is False:
        return None
    if value is True:
        return TlsOptions()
    if not isinstance(value, Mapping):
        raise ConfigError(key, value, "must be true or an object with ca_file/cert_file/key_file")
    unknown = sorted(set(value) - _TLS_KEYS)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", value[unknown[0]], "unknown key")
    files: dict[str, str | None] = {}
    for name in sorted(_TLS_KEYS):
        path = value.get(name)
        if path is not None and not Path(str(path)).is_file():
            raise ConfigError(f"{key}.{name}", path, "file not found")
        files[name] = None if path is None else str(path)
    if (files["cert_file"] is None) != (files["key_file"] is None):
        raise ConfigError(
            f"{key}.cert_file", files["cert_file"], "give both cert_file and key_file"
        )
    return TlsOptions(files["ca_file"], files["cert_file"], files["key_file"])


def ingest_client_id(site: str, instance_id: str | None) -> str:
    """The ingester's MQTT client id: one persistent session per controller instance.

    Two instances sharing a client id kick each other off the broker (each held about half the
    telemetry, issue 8); each needs its own session so a follower is as warm as the leader.
    With no instance id (a single ``serve``) the id is the same at every start, so a restarted
    serve resumes its session and receives what its predecessor left unacknowledged.
    """
    base = f"wattwheel-serve-{site}"
    if instance_id is None:
        return base
    return f"{base}-{re.sub(r'[^A-Za-z0-9_.:-]', '_', instance_id)}"
