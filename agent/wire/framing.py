"""Length-prefixed frames of the local API (DESIGN §6), sans-IO in the h11 style.

A frame is a 4-byte big-endian length followed by that many bytes of payload (one CBOR map).
The decoder owns a buffer: feed it whatever the socket produced with ``receive_data()``, then
call ``next_frame()`` until it returns :data:`NEED_DATA`. A declared length above ``max_frame``
raises :class:`agent.errors.FrameTooLargeError` as soon as the 4 header bytes are in, before any
of the body is buffered; a zero length is a protocol error (a frame holds one CBOR map, which
is at least one byte). After an error the stream is out of sync: the decoder stays broken and
the connection must be closed.
"""

from __future__ import annotations

from typing import Final

from agent.errors import FrameTooLargeError, LocalProtocolError, WireError

__all__ = ["HEADER_SIZE", "NEED_DATA", "FrameDecoder", "encode_frame"]

HEADER_SIZE: Final = 4
MAX_FRAME_LIMIT: Final = (1 << 32) - 1


class _NeedData:
    """Sentinel: the buffer does not yet hold a whole frame."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


def encode_frame(payload: bytes, max_frame: int = MAX_FRAME_LIMIT) -> bytes:
    """``len(payload)`` as 4 bytes big-endian, then the payload."""
    if not payload:
        raise LocalProtocolError("a frame cannot be empty")
    if len(payload) > max_frame:
        raise LocalProtocolError(f"frame of {len(payload)} bytes exceeds {max_frame}")
    return len(payload).to_bytes(HEADER_SIZE, "big") + payload


class FrameDecoder:
    """Splits a byte stream into frames; see the module doc."""

    def __init__(self, max_frame: int) -> None:
        if not 1 <= max_frame <= MAX_FRAME_LIMIT:
            raise ValueError("max_frame must be 1..2**32-1")
        self.max_frame = max_frame
        self._buf = bytearray()
        self._need: int | None = None  # body length of the frame being read
        self._error: WireError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames."""
        return len(self._buf)

    def receive_data(self, data: bytes) -> None:
        """Append bytes from the stream (one read's worth).

        If they complete the header of an oversized frame, the error is raised here and the
        bytes are dropped, so a hostile length never makes the buffer grow past one read.
        """
        if self._error is not None:
            raise self._error
        self._buf += data
        self._header()

    def _fail(self, error: WireError) -> WireError:
        self._error = error
        self._buf.clear()
        return error

    def _header(self) -> None:
        if self._need is not None or len(self._buf) < HEADER_SIZE:
            return
        length = int.from_bytes(self._buf[:HEADER_SIZE], "big")
        if length > self.max_frame:
            raise self._fail(
                FrameTooLargeError(
                    f"frame of {length} bytes exceeds the maximum of {self.max_frame}"
                )
            )
        if length == 0:
            raise self._fail(WireError("empty frame"))
        del self._buf[:HEADER_SIZE]
        self._need = length

    def next_frame(self) -> bytes | _NeedData:
        """The next whole frame's payload, or ``NEED_DATA``."""
        if self._error is not None:
            raise self._error
        self._header()
        if self._need is None or len(self._buf) < self._need:
            return NEED_DATA
        frame = bytes(self._buf[: self._need])
        del self._buf[: self._need]
        self._need = None
        return frame
