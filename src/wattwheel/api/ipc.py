"""Framing for the channel between ``wattwheel serve``'s control process and its API process
(a Unix socket pair): each frame is a 1-byte codec, a 4-byte big-endian length and the payload.

The control process sends pickles (state writes, dumps, replies: its own dataclasses, fast to
encode); the API process, which faces the network, sends JSON only (commands, store reads,
heartbeats), so nothing it sends is ever unpickled by the controller.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import socket
import struct
import threading
from typing import Any

_HEADER = struct.Struct(">cI")
PICKLE, JSON = b"P", b"J"
#: No frame is larger (a full state dump of a big site is a few MB).
MAX_FRAME_BYTES = 256 * 1024 * 1024


class ChannelClosed(Exception):
    """The other end closed the channel (or it broke)."""


class Channel:
    """One end of the socket pair; :meth:`send` is thread-safe, :meth:`recv` is for one reader.

    Args:
        sock: a connected stream socket (blocking).
        send_codec: ``PICKLE`` (the control process) or ``JSON`` (the API process).
        accept: the codecs :meth:`recv` accepts (the control process accepts JSON only).
    """

    def __init__(self, sock: socket.socket, send_codec: bytes, accept: frozenset[bytes]) -> None:
        self.sock = sock
        self.send_codec = send_codec
        self.accept = accept
        self._send_lock = threading.Lock()

    def send(self, message: Any) -> None:
        if self.send_codec == PICKLE:
            payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        else:
            payload = json.dumps(message, separators=(",", ":")).encode()
        frame = _HEADER.pack(self.send_codec, len(payload)) + payload
        try:
            with self._send_lock:
                self.sock.sendall(frame)
        except OSError as exc:
            raise ChannelClosed(str(exc)) from exc

    def recv(self) -> Any:
        codec, size = _HEADER.unpack(self._exactly(_HEADER.size))
        if codec not in self.accept or size > MAX_FRAME_BYTES:
            raise ChannelClosed(f"bad frame: codec {codec!r}, {size} bytes")
        payload = self._exactly(size)
        if codec == PICKLE:
            return pickle.loads(payload)
        return json.loads(payload)

    def _exactly(self, n: int) -> bytes:
        chunks: list[bytes] = []
        while n > 0:
            try:
                chunk = self.sock.recv(min(n, 1 << 20))
            except OSError as exc:
                raise ChannelClosed(str(exc)) from exc
            if not chunk:
                raise ChannelClosed("end of stream")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
