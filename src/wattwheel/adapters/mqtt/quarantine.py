"""Where MQTT messages that are not telemetry go: counted by reason, the latest kept for a look.

A rejected message is acknowledged with the batch it arrived in (it will never become valid,
so a redelivery would only repeat the rejection on every restart). What an operator needs
to find the publisher is kept here: the topic, the reason, when, and the first bytes of the
payload. Bounded: at most ``max_kept`` messages of at most ``head_bytes`` bytes each, so a
flood of garbage costs a fixed amount of memory.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

from wattwheel.domain.telemetry import MessageRejection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuarantinedMessage:
    """One rejected message: ``received_s`` is epoch seconds; ``payload_head`` its first bytes."""

    topic: str
    reason: str
    detail: str
    received_s: float
    payload_bytes: int
    payload_head: bytes


class Quarantine:
    """Rejected messages, counted by reason (``counts``), the latest ``max_kept`` kept.

    The first rejection of each reason is logged at WARNING, the rest at DEBUG.
    """

    def __init__(self, max_kept: int = 100, head_bytes: int = 256) -> None:
        self.head_bytes = head_bytes
        self.counts: dict[str, int] = {}
        self._kept: deque[QuarantinedMessage] = deque(maxlen=max_kept)
        self._new: dict[str, MessageRejection] = {}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, topic: str, reason: str, detail: str, received_s: float, payload: bytes) -> None:
        first = reason not in self.counts
        self.counts[reason] = self.counts.get(reason, 0) + 1
        seen = self._new.get(reason)
        self._new[reason] = MessageRejection(
            reason, 1 if seen is None else seen.count + 1, f"{topic[:256]}: {detail[:300]}"
        )
        self._kept.append(
            QuarantinedMessage(
                topic[:256],
                reason,
                detail[:500],
                received_s,
                len(payload),
                payload[: self.head_bytes],
            )
        )
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "MQTT message quarantined (%s, %d so far%s): %s",
            reason,
            self.counts[reason],
            "; further ones of this kind at debug" if first else "",
            detail[:500],
        )

    def latest(self) -> list[QuarantinedMessage]:
        """The kept messages, oldest first."""
        return list(self._kept)

    def take_new(self) -> list[MessageRejection]:
        """What was quarantined since the previous call, per reason (for counters and events)."""
        new, self._new = list(self._new.values()), {}
        return new
