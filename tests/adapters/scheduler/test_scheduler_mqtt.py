"""The MQTT hook against a real Mosquitto broker started on a free port (tests/services.py)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import aiomqtt
import pytest

from services import Mosquitto
from wattwheel.adapters.scheduler import DeferRequest, SchedulerRequestError
from wattwheel.adapters.scheduler.mqtt import MqttSchedulerHook, requests_topic
from wattwheel.adapters.scheduler.requests import decode_request

pytestmark = pytest.mark.service

REQUEST = DeferRequest(
    site="dc1",
    domain="row-a",
    power_w=8_000.0,
    start_at_s=1_767_225_600.0,
    duration_s=900.0,
    deadline_s=1_767_229_200.0,
    issued_at_s=1_767_225_600.0,
    request_id="d-7",
)


async def test_publishes_qos1_to_the_site_topic(mosquitto: Mosquitto) -> None:
    hook = MqttSchedulerHook("dc1", "127.0.0.1", mosquitto.port, timeout_s=2.0)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as subscriber:
        await subscriber.subscribe("wattwheel/dc1/scheduler/requests", qos=1)
        ack = await hook.request(REQUEST)
        message = await asyncio.wait_for(anext(aiter(subscriber.messages)), 5.0)
    assert ack.delivered and ack.accepted is None and ack.request_id == "d-7"
    assert str(message.topic) == "wattwheel/dc1/scheduler/requests"
    assert message.qos == 1
    assert isinstance(message.payload, bytes)
    assert decode_request(message.payload) == REQUEST


async def test_broker_down_gives_undelivered_ack_logged_once(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    hook = MqttSchedulerHook(
        "dc1", "127.0.0.1", mosquitto.port, timeout_s=0.5, retries=1, backoff_s=0.01
    )
    mosquitto.kill()
    caplog.set_level(logging.DEBUG, logger="wattwheel.adapters.scheduler.mqtt")
    acks = [await hook.request(REQUEST) for _ in range(2)]
    mosquitto.start()  # the broker comes back on the same port
    recovered = await hook.request(REQUEST)
    assert [a.delivered for a in acks] == [False, False]
    assert recovered.delivered
    levels = [r.levelno for r in caplog.records if r.name.endswith("scheduler.mqtt")]
    assert levels == [logging.WARNING, logging.DEBUG, logging.INFO]


async def test_request_for_another_site_is_refused() -> None:
    hook = MqttSchedulerHook("dc1", "127.0.0.1", 1)
    with pytest.raises(SchedulerRequestError, match="dc2"):
        await hook.request(replace(REQUEST, site="dc2"))


def test_topic_rejects_wildcards() -> None:
    assert requests_topic("dc1") == "wattwheel/dc1/scheduler/requests"
    with pytest.raises(ValueError, match="dc/1"):
        requests_topic("dc/1")
