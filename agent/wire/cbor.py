"""Strict CBOR for hostile input, deterministic CBOR for output (DESIGN §5; RFC 8949).

Inbound bytes are checked by a small iterative well-formedness scanner *before* cbor2 sees them:

- every declared length is checked against the bytes that are actually left, so a header that
  announces a 2**63-byte string or array costs nothing (RFC 8949 §5.3 "well-formed");
- indefinite lengths, undefined, simple values and every tag are refused (a tag may be allowed
  only as the outermost item, for COSE_Sign1); cbor2's semantic tag decoders therefore never run
  on hostile data (tag 35 would compile an attacker's regular expression, tag 36 parse MIME);
- nesting depth, item count and total size are bounded; map keys must be integers or text;
  duplicate keys are refused (RFC 8949 §5.6); trailing bytes are refused.

Anything wrong raises :class:`agent.errors.WireError`, nothing else. Output uses cbor2's
``canonical=True``: core deterministic encoding (RFC 8949 §4.2.1), shortest forms, map keys
sorted by their encoded bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cbor2

from agent.errors import LocalProtocolError, WireError

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_MAX_SIZE",
    "decode",
    "decode_deterministic",
    "diagnostic",
    "encode",
    "scan",
]

DEFAULT_MAX_SIZE = 64 * 1024
DEFAULT_MAX_DEPTH = 16
DEFAULT_MAX_ITEMS = 16 * 1024

_FLOAT_BYTES = {25: 2, 26: 4, 27: 8}
_SIMPLE_OK = {20, 21, 22}  # false, true, null


def _head(data: bytes, pos: int) -> tuple[int, int, int]:
    """Read one initial byte and its argument: (major type, argument, new position)."""
    n = len(data)
    ib = data[pos]
    major, ai = ib >> 5, ib & 0x1F
    pos += 1
    if ai < 24:
        return major, ai, pos
    if ai in (24, 25, 26, 27):
        width = 1 << (ai - 24)
        if major == 7:
            # simple value (24) or float (25..27): the argument is not a length
            if pos + width > n:
                raise WireError("CBOR truncated")
            return major, ai, pos + width
        if pos + width > n:
            raise WireError("CBOR truncated")
        return major, int.from_bytes(data[pos : pos + width], "big"), pos + width
    if ai == 31:
        raise WireError("indefinite-length CBOR items are not accepted")
    raise WireError("reserved CBOR additional information")


def scan(
    data: bytes,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_items: int = DEFAULT_MAX_ITEMS,
    top_tag: int | None = None,
) -> None:
    """Check that ``data`` is exactly one well-formed CBOR item within the limits.

    Raises ``WireError`` on truncation, trailing bytes, indefinite lengths, tags (other than
    ``top_tag`` on the outermost item), simple values other than false/true/null, undefined,
    map keys that are not integers or text, excessive depth or item count.
    """
    n = len(data)
    pos = 0
    # remaining[i] = items still expected at nesting level i; is_map[i] tells key positions
    remaining = [1]
    is_map = [False]
    items = 0
    first = True
    while remaining:
        if pos >= n:
            raise WireError("CBOR truncated")
        items += 1
        if items > max_items:
            raise WireError(f"CBOR has more than {max_items} items")
        level = len(remaining) - 1
        is_key = is_map[level] and remaining[level] % 2 == 0
        ib = data[pos]
        if ib & 0x1F < 24:  # the argument is in the initial byte (most heads): no call
            major, arg, pos = ib >> 5, ib & 0x1F, pos + 1
        else:
            major, arg, pos = _head(data, pos)
        if is_key and major not in (0, 1, 3):
            raise WireError("CBOR map keys must be integers or text strings")
        remaining[level] -= 1
        if major in (2, 3):
            if arg > n - pos:
                raise WireError("CBOR string longer than the message")
            pos += arg
        elif major == 4:
            if arg > n - pos:
                raise WireError("CBOR array longer than the message")
            if arg:
                remaining.append(arg)
                is_map.append(False)
        elif major == 5:
            if arg > (n - pos) // 2:
                raise WireError("CBOR map longer than the message")
            if arg:
                remaining.append(2 * arg)
                is_map.append(True)
        elif major == 6:
            if not (first and top_tag is not None and arg == top_tag):
                raise WireError(f"CBOR tag {arg} is not accepted here")
            remaining.append(1)
            is_map.append(False)
        elif major == 7 and arg not in _SIMPLE_OK and arg not in _FLOAT_BYTES:
            raise WireError("CBOR simple value or undefined is not accepted")
        first = False
        if len(remaining) > max_depth + 1:
            raise WireError(f"CBOR nested deeper than {max_depth}")
        while remaining and remaining[-1] == 0:
            remaining.pop()
            is_map.pop()
    if pos != n:
        raise WireError("trailing bytes after the CBOR item")


def decode(
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_items: int = DEFAULT_MAX_ITEMS,
    top_tag: int | None = None,
) -> Any:
    """Decode one CBOR item from hostile bytes; any failure is ``WireError``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError("CBOR input must be bytes")
    data = bytes(data)
    if len(data) > max_size:
        raise WireError(f"CBOR message of {len(data)} bytes exceeds {max_size}")
    scan(data, max_depth=max_depth, max_items=max_items, top_tag=top_tag)
    try:
        return cbor2.loads(
            data,
            max_depth=max_depth + 2,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        # ValueError covers UnicodeDecodeError (invalid UTF-8 text) and int-conversion limits
        raise WireError(f"malformed CBOR ({exc.__class__.__name__})") from None


def _refuse_tag(_decoder: Any, tag: Any = None) -> Any:
    raise ValueError("CBOR tags are not accepted here")


#: Every tag cbor2 decodes natively (0–299 covers its registry; 1004 and 55799 are the others),
#: mapped to a refusal that runs before the tag's content is read; ``tag_hook`` refuses the rest.
_NO_SEMANTIC_TAGS = dict.fromkeys((*range(300), 1004, 55799), _refuse_tag)


def decode_deterministic(
    data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, max_depth: int = DEFAULT_MAX_DEPTH
) -> Any:
    """Decode one CBOR item that must be in deterministic encoding (RFC 8949 §4.2.1).

    The fast path for messages that are only valid deterministically encoded (``tx`` records,
    whose hashed body is cut out of the bytes). cbor2 (>= 6.3) itself refuses indefinite
    lengths, duplicate keys and nesting deeper than ``max_depth``, and checks every declared
    length against the bytes it has; every tag is refused before its content is read (no
    semantic decoder runs); then the value must encode back to exactly ``data``, which refuses
    trailing bytes, non-shortest forms and unsorted keys. ``scan``, whose per-item walk costs
    several times the decode, is not needed for that. Undefined and simple values do decode
    here (as cbor2's objects): the caller's typed check refuses what it does not expect.
    Anything wrong raises :class:`WireError`.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError("CBOR input must be bytes")
    data = bytes(data)
    if len(data) > max_size:
        raise WireError(f"CBOR message of {len(data)} bytes exceeds {max_size}")
    try:
        obj = cbor2.loads(
            data,
            max_depth=max_depth,  # nested containers, as ``scan`` counts them
            allow_indefinite=False,
            allow_duplicate_keys=False,
            semantic_decoders=_NO_SEMANTIC_TAGS,
            tag_hook=_refuse_tag,
        )
        again = cbor2.dumps(obj, canonical=True)
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise WireError(f"malformed CBOR ({exc.__class__.__name__})") from None
    if again != data:
        raise WireError("CBOR is not deterministically encoded")
    return obj


def encode(obj: Any) -> bytes:
    """Deterministic CBOR (RFC 8949 §4.2.1) of a value built from plain types."""
    try:
        return cbor2.dumps(obj, canonical=True)
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise LocalProtocolError(f"value cannot be encoded as CBOR: {exc}") from None


def diagnostic(obj: Any) -> str:
    """RFC 8949 §8 diagnostic notation of a decoded value (for docs and logs of examples)."""
    if isinstance(obj, bool):
        return "true" if obj else "false"
    if obj is None:
        return "null"
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, float):
        return repr(obj)
    if isinstance(obj, str):
        escaped = obj.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(obj, bytes | bytearray):
        return f"h'{bytes(obj).hex()}'"
    if isinstance(obj, cbor2.CBORTag):
        return f"{obj.tag}({diagnostic(obj.value)})"
    if isinstance(obj, Mapping):
        # shown in deterministic order, as encoded
        pairs = sorted(obj.items(), key=lambda kv: cbor2.dumps(kv[0], canonical=True))
        return "{" + ", ".join(f"{diagnostic(k)}: {diagnostic(v)}" for k, v in pairs) + "}"
    if isinstance(obj, Sequence):
        return "[" + ", ".join(diagnostic(v) for v in obj) + "]"
    raise LocalProtocolError(f"no diagnostic notation for {type(obj).__name__}")
