"""BER-TLV as used by ISO/IEC 7816-4 §5.2.2 and EMV Book 3 Annex B. Sans-IO.

Tags are kept as integers whose big-endian bytes are the tag bytes (``0x9F36``, ``0xBF0C``).
The decoder treats every byte as hostile (DESIGN §3): a tag or length that runs past the buffer,
an indefinite length (``80``), a length field longer than 4 bytes, a non-minimal length (strict
mode, the default) or nesting deeper than ``MAX_DEPTH`` raises ``TlvError`` — nothing else.

EMV allows ``00`` (and ``FF``) filler bytes between data objects in templates
(EMV Book 3 Annex B); ``decode(..., skip_padding=True)`` skips them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from agent.errors import LocalProtocolError, TlvError

MAX_TAG_BYTES = 4
MAX_LENGTH_BYTES = 4
MAX_DEPTH = 16


def tag_bytes(tag: int) -> bytes:
    """The encoded bytes of ``tag``; raises ``LocalProtocolError`` if they are not a valid tag."""
    if isinstance(tag, bool) or not isinstance(tag, int) or tag <= 0:
        raise LocalProtocolError(f"not a tag: {tag!r}")
    raw = tag.to_bytes((tag.bit_length() + 7) // 8, "big")
    if len(raw) > MAX_TAG_BYTES:
        raise LocalProtocolError(f"tag {tag:X} longer than {MAX_TAG_BYTES} bytes")
    try:
        parsed, end = decode_tag(raw)
    except TlvError as e:
        raise LocalProtocolError(f"not a valid BER tag: {tag:X}") from e
    if end != len(raw) or parsed != tag:
        raise LocalProtocolError(f"not a valid BER tag: {tag:X}")
    return raw


def is_constructed(tag: int) -> bool:
    """Bit 6 of the first tag byte (ISO 7816-4 §5.2.2.1)."""
    first = tag
    while first > 0xFF:
        first >>= 8
    return bool(first & 0x20)


def decode_tag(buf: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode one tag at ``offset``; returns ``(tag, next_offset)``."""
    n = len(buf)
    if offset >= n:
        raise TlvError("truncated tag")
    first = buf[offset]
    tag = first
    pos = offset + 1
    if first & 0x1F == 0x1F:
        while True:
            if pos >= n:
                raise TlvError("truncated multi-byte tag")
            b = buf[pos]
            pos += 1
            tag = (tag << 8) | b
            if pos - offset > MAX_TAG_BYTES:
                raise TlvError(f"tag longer than {MAX_TAG_BYTES} bytes")
            if not b & 0x80:
                break
    return tag, pos


def decode_length(buf: bytes, offset: int = 0, *, strict: bool = True) -> tuple[int, int]:
    """Decode one length field at ``offset``; returns ``(length, next_offset)``.

    Rejects the indefinite form and length fields over 4 bytes; in strict mode also a long form
    that a shorter form could have expressed (DER minimal encoding).
    """
    n = len(buf)
    if offset >= n:
        raise TlvError("truncated length")
    first = buf[offset]
    if first < 0x80:
        return first, offset + 1
    if first == 0x80:
        raise TlvError("indefinite length is not allowed")
    count = first & 0x7F
    if count > MAX_LENGTH_BYTES:
        raise TlvError(f"length field of {count} bytes is too long")
    if offset + 1 + count > n:
        raise TlvError("truncated long-form length")
    value = int.from_bytes(buf[offset + 1 : offset + 1 + count], "big")
    if strict and (value < 0x80 or buf[offset + 1] == 0):
        raise TlvError("non-minimal length encoding")
    return value, offset + 1 + count


def encode_length(length: int) -> bytes:
    """Minimal BER length encoding."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise LocalProtocolError(f"bad TLV length {length!r}")
    if length < 0x80:
        return bytes((length,))
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    if len(raw) > MAX_LENGTH_BYTES:
        raise LocalProtocolError("TLV value too long")
    return bytes((0x80 | len(raw),)) + raw


def encode(tag: int, value: bytes) -> bytes:
    """Encode one data object ``tag ‖ length ‖ value``."""
    return tag_bytes(tag) + encode_length(len(value)) + bytes(value)


def encode_many(items: Sequence[tuple[int, bytes]]) -> bytes:
    """Concatenate several encoded data objects."""
    return b"".join(encode(t, v) for t, v in items)


@dataclass(frozen=True, slots=True)
class Tlv:
    """One data object. ``children`` decodes a constructed value on demand."""

    tag: int
    value: bytes

    @property
    def constructed(self) -> bool:
        return is_constructed(self.tag)

    @property
    def children(self) -> tuple[Tlv, ...]:
        """Decoded nested objects (EMV filler bytes skipped); () for a primitive object."""
        if not self.constructed:
            return ()
        return tuple(decode(self.value, skip_padding=True))

    def to_bytes(self) -> bytes:
        return encode(self.tag, self.value)

    def find(self, tag: int) -> Tlv | None:
        """Depth-first search in this object and its descendants."""
        return _find((self,), tag, 0)

    def __repr__(self) -> str:
        return f"Tlv({self.tag:X}, {self.value.hex().upper()})"


def decode_one(buf: bytes, offset: int = 0, *, strict: bool = True) -> tuple[Tlv, bytes]:
    """Decode the data object at ``offset``; returns ``(tlv, rest_of_buffer)``."""
    buf = bytes(buf)
    tlv, end = _decode_at(buf, offset, strict)
    return tlv, buf[end:]


def _decode_at(buf: bytes, offset: int, strict: bool) -> tuple[Tlv, int]:
    tag, pos = decode_tag(buf, offset)
    if tag in (0x00, 0xFF):
        raise TlvError(f"invalid tag {tag:02X}")
    length, pos = decode_length(buf, pos, strict=strict)
    end = pos + length
    if end > len(buf):
        raise TlvError(f"length {length} of tag {tag:X} runs past the data")
    return Tlv(tag, buf[pos:end]), end


def iter_decode(buf: bytes, *, skip_padding: bool = False, strict: bool = True) -> Iterator[Tlv]:
    """Decode a concatenation of data objects lazily."""
    buf = bytes(buf)
    pos = 0
    n = len(buf)
    while pos < n:
        if skip_padding and buf[pos] in (0x00, 0xFF):
            pos += 1
            continue
        tlv, pos = _decode_at(buf, pos, strict)
        yield tlv


def decode(buf: bytes, *, skip_padding: bool = False, strict: bool = True) -> list[Tlv]:
    """Decode a concatenation of data objects; the whole buffer must be consumed."""
    return list(iter_decode(buf, skip_padding=skip_padding, strict=strict))


def _find(items: Sequence[Tlv], tag: int, depth: int) -> Tlv | None:
    if depth > MAX_DEPTH:
        raise TlvError(f"TLV nesting deeper than {MAX_DEPTH}")
    for item in items:
        if item.tag == tag:
            return item
        if item.constructed:
            hit = _find(item.children, tag, depth + 1)
            if hit is not None:
                return hit
    return None


def find(data: bytes | Sequence[Tlv], tag: int) -> Tlv | None:
    """Depth-first search for ``tag`` in encoded ``data`` or decoded objects (None if absent)."""
    items = decode(data, skip_padding=True) if isinstance(data, bytes | bytearray) else data
    return _find(items, tag, 0)


def find_value(data: bytes | Sequence[Tlv], tag: int) -> bytes | None:
    """The value of the first ``tag`` found, or None."""
    hit = find(data, tag)
    return None if hit is None else hit.value


def walk(data: bytes | Sequence[Tlv]) -> Iterator[Tlv]:
    """Every data object, depth first (constructed objects before their children)."""
    items = decode(data, skip_padding=True) if isinstance(data, bytes | bytearray) else data
    yield from _walk(items, 0)


def _walk(items: Sequence[Tlv], depth: int) -> Iterator[Tlv]:
    if depth > MAX_DEPTH:
        raise TlvError(f"TLV nesting deeper than {MAX_DEPTH}")
    for item in items:
        yield item
        if item.constructed:
            yield from _walk(item.children, depth + 1)
