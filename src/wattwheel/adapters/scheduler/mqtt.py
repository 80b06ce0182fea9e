"""Scheduler hook over MQTT: publish the JSON request, QoS 1, to
``wattwheel/<site>/scheduler/requests`` (aiomqtt).

The Ack is "delivered" once the broker has acknowledged the publish (PUBACK); whether the
scheduler accepts the request is not reported on this transport (``accepted`` is None). QoS 1 may
deliver a message twice: a scheduler drops the duplicate by ``request_id`` and ``revision``.
Each request opens its own short connection: requests are rare (one per plan period at most),
and a broker restart between two requests then costs nothing. An unreachable broker is logged
once at WARNING (then DEBUG until it recovers) and yields an undelivered Ack.
"""

from __future__ import annotations

import asyncio
import logging

import aiomqtt

from wattwheel.adapters.scheduler.requests import (
    Ack,
    SchedulerRequest,
    SchedulerRequestError,
    encode_request,
    idempotency_key,
)

log = logging.getLogger(__name__)


def requests_topic(site: str) -> str:
    """The topic scheduler requests of ``site`` are published to."""
    if not site or any(c in site for c in "/+#"):
        raise ValueError(f"site = {site!r}: must be non-empty without '/', '+' or '#'")
    return f"wattwheel/{site}/scheduler/requests"


class MqttSchedulerHook:
    """A :class:`~wattwheel.adapters.scheduler.hook.SchedulerHook` publishing to a broker."""

    def __init__(
        self,
        site: str,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        timeout_s: float = 2.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.site = site
        self.topic = requests_topic(site)
        self._host, self._port = host, port
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._username, self._password = username, password
        self._failing = False

    async def _publish(self, body: bytes) -> None:
        async with aiomqtt.Client(
            self._host,
            self._port,
            username=self._username,
            password=self._password,
            timeout=self._timeout_s,
        ) as client:
            await client.publish(self.topic, body, qos=1, timeout=self._timeout_s)

    async def request(self, request: SchedulerRequest) -> Ack:
        """Publish ``request`` (QoS 1); retry with backoff; never raises on a broker fault."""
        if request.site != self.site:
            raise SchedulerRequestError(
                f"request site = {request.site!r} but this hook publishes for {self.site!r}"
            )
        body = encode_request(request)
        key = idempotency_key(request)
        error: Exception | None = None
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1))
            try:
                await asyncio.wait_for(self._publish(body), self._timeout_s * 2)
            except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
                error = exc
                continue
            self._recovered()
            return Ack(key, delivered=True, accepted=None, detail=f"published to {self.topic}")
        self._fault(error)
        return Ack(key, delivered=False, accepted=None, detail=f"{type(error).__name__}: {error}")

    def _fault(self, error: Exception | None) -> None:
        level = logging.DEBUG if self._failing else logging.WARNING
        log.log(level, "scheduler MQTT broker %s:%d unreachable: %r", self._host, self._port, error)
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info("scheduler MQTT broker %s:%d reachable again", self._host, self._port)
            self._failing = False
