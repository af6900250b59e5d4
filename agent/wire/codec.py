"""Typed messages of ``messages.cddl`` with strict CBOR codecs (DESIGN §5, §6).

Every message is a frozen dataclass whose constructor checks every field (type, size, range,
allowed values): a message that exists is valid. ``to_cbor()`` emits deterministic CBOR
(RFC 8949 §4.2.1), so what is hashed or signed is reproducible byte for byte; ``from_cbor()``
takes hostile bytes through :func:`agent.wire.cbor.decode` (size, depth, item and tag limits),
then checks the exact key set and every field. Decoding raises :class:`agent.errors.WireError`
and nothing else; building a bad message locally raises
:class:`agent.errors.MessageEncodingError` (a bug on our side, not the peer's).

``from_cbor(..., validate=True)`` also checks the decoded value against the CDDL with zcbor
(:mod:`agent.wire.schema`); the hand checks here are a superset of the schema, so the hot path
leaves it off and the tests prove the two agree.

Checks the schema cannot express: terminal ids are 12 ASCII digits; a tx record's ``tx_id`` is
a canonical lower-case UUID text and its ``card_id_code`` upper-case hex; ack ranges have
1 <= from <= to; blacklist entries are unique and a delta's add and remove are disjoint, with
version > base_version; a command expires after it was issued; open maps (event data, health,
API args) hold plain values only.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn, Self, TypeAlias

from agent.errors import MessageEncodingError, WireError
from agent.wire import schema
from agent.wire.cbor import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_SIZE,
    decode,
    decode_deterministic,
    encode,
)

__all__ = [
    "API_MAX_DEPTH",
    "AUTHORIZATION_REQUEST",
    "AUTHORIZE_KINDS",
    "CONFIG_SETTINGS",
    "EVENT_TYPES",
    "REFUSAL_REASONS",
    "SCHEMA_VERSION",
    "TX_BATCH_MAX",
    "TX_BATCH_MAX_SIZE",
    "TX_KINDS",
    "TX_OUTCOMES",
    "AckMessage",
    "ApiEvent",
    "ApiRequest",
    "ApiResponse",
    "AuthorizationRefused",
    "AuthorizationRequest",
    "Authorize",
    "BlacklistDelta",
    "BlacklistSnapshot",
    "CardReplaced",
    "Command",
    "CommandBody",
    "ConfigSet",
    "EventMessage",
    "Message",
    "Ping",
    "Report",
    "Resend",
    "StatusMessage",
    "TelemetryMessage",
    "TxMessage",
    "ack_ranges",
    "decode_client_frame",
    "encode_tx_batch",
    "split_tx_payload",
]

SCHEMA_VERSION = 1
UINT64_MAX = (1 << 64) - 1
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
UINT32_MAX = (1 << 32) - 1

TX_KINDS = (
    "lock",
    "unlock",
    "report_loss",
    "activate",
    "bank_activate",
    "pin_change",
    "pin_reset",
    "pin_unblock",
    "auto_lock",
)
TX_OUTCOMES = ("done", "failed")
MAX_IDEMPOTENCY_KEY = 128
EVENT_TYPES = (
    "agent_started",
    "agent_stopping",
    "journal_quarantined",
    "journal_full",
    "command_rejected",
    "command_applied",
    "blacklist_hit",
    "blacklist_updated",
    "device_fault",
    "device_recovered",
    "uplink_online",
    "uplink_offline",
    "tx_in_doubt",
    "tx_resolved",
    "config_changed",
    "pong",
    "authorization_request",
)
AUTHORIZE_KINDS = ("unlock", "pin_reset", "pin_unblock")
#: Why central refused an online authorization request (``authorization_refused``).
REFUSAL_REASONS = ("card_replaced", "formal_loss", "denied")
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR")

#: Settings central may change with ``config_set``: key -> allowed values (a tuple of choices,
#: ``bool``, or an inclusive ``range``).
CONFIG_SETTINGS: Mapping[str, tuple[str, ...] | type[bool] | range] = {
    "log.level": LOG_LEVELS,
    "log.trace_apdus": bool,
    "policy.activate_offline_max_per_day": range(0, 10_001),
    "policy.activate_offline_max_age_h": range(0, 721),
    "policy.report_loss_offline": bool,
    "journal.retention_days": range(1, 3_651),
    "uplink.inflight_window": range(1, 1_025),
    "uplink.backlog_rate": range(1, 100_001),
}

MAX_MAP_ENTRIES = 64
MAX_LIST_ITEMS = 32
MAX_NAME = 32
MAX_CODE = 64
MAX_MESSAGE_TEXT = 256
MAX_ACK_RANGES = 256
MAX_SNAPSHOT_ENTRIES = 100_000
MAX_DELTA_ENTRIES = 10_000
API_MAX_DEPTH = 8
#: A signed blacklist snapshot of 100,000 entries is about 1.7 MB.
MAX_COMMAND_SIZE = 2 * 1024 * 1024
MAX_COMMAND_ITEMS = MAX_SNAPSHOT_ENTRIES + 64


# --------------------------------------------------------------------------------------------
# Field checks. They raise _Invalid; the constructor turns it into MessageEncodingError and
# from_obj() into WireError, so the blame lands on the right side.
# --------------------------------------------------------------------------------------------
class _Invalid(Exception):
    pass


def _fail(message: str) -> NoReturn:
    raise _Invalid(message)


def _uint(value: object, name: str, lo: int = 0, hi: int = UINT64_MAX) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        _fail(f"{name} must be an integer")
    if not lo <= value <= hi:
        _fail(f"{name} out of range {lo}..{hi}")
    return value


def _bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        _fail(f"{name} must be a bool")
    return value


def _bytes(value: object, name: str, size: int | None = None, max_size: int = 256) -> bytes:
    if not isinstance(value, bytes):
        _fail(f"{name} must be a byte string")
    if size is not None and len(value) != size:
        _fail(f"{name} must be {size} bytes")
    if len(value) > max_size:
        _fail(f"{name} longer than {max_size} bytes")
    return value


def _text(value: object, name: str, lo: int = 1, hi: int = MAX_CODE) -> str:
    if not isinstance(value, str):
        _fail(f"{name} must be a text string")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        _fail(f"{name} is not valid Unicode text")
    if not lo <= size <= hi:
        _fail(f"{name} must be {lo}..{hi} bytes of UTF-8")
    return value


def _choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        _fail(f"{name} must be one of {', '.join(choices)}")
    return value


def _terminal(value: object, name: str = "terminal", *, allow_all: bool = False) -> str:
    if allow_all and value == "all":
        return "all"
    if not isinstance(value, str) or len(value) != 12 or not value.isascii() or not value.isdigit():
        _fail(f"{name} must be 12 ASCII digits" + (' or "all"' if allow_all else ""))
    return value


def _card_ids(value: object, name: str, max_items: int) -> tuple[bytes, ...]:
    if not isinstance(value, list | tuple):
        _fail(f"{name} must be an array")
    if len(value) > max_items:
        _fail(f"{name} has more than {max_items} entries")
    out = tuple(_bytes(v, f"{name} entry", 16) for v in value)
    if len(set(out)) != len(out):
        _fail(f"{name} has duplicate entries")
    return out


def _scalar(value: object, name: str) -> None:
    if value is None or isinstance(value, bool | str | bytes):
        return
    if isinstance(value, int):
        _uint(value, name, INT64_MIN, INT64_MAX)
        return
    _fail(f"{name} must be an integer, text, bytes, bool or null")


def _data_map(value: object, name: str) -> dict[str, Any]:
    """``data-map``: up to 64 names -> scalar or list of up to 32 scalars."""
    if not isinstance(value, Mapping):
        _fail(f"{name} must be a map")
    if len(value) > MAX_MAP_ENTRIES:
        _fail(f"{name} has more than {MAX_MAP_ENTRIES} entries")
    out: dict[str, Any] = {}
    for key, item in value.items():
        _text(key, f"{name} key", 1, MAX_NAME)
        if isinstance(item, list | tuple):
            if len(item) > MAX_LIST_ITEMS:
                _fail(f"{name}[{key}] has more than {MAX_LIST_ITEMS} items")
            for v in item:
                _scalar(v, f"{name}[{key}] item")
            out[key] = list(item)
        else:
            _scalar(item, f"{name}[{key}]")
            out[key] = item
    return out


def _plain(value: object, name: str, depth: int = 0) -> Any:
    """An ``any`` value of the local API: plain CBOR types only, bounded depth."""
    if depth > API_MAX_DEPTH:
        _fail(f"{name} nested deeper than {API_MAX_DEPTH}")
    if value is None or isinstance(value, bool | str | bytes):
        return value
    if isinstance(value, int):
        return _uint(value, name, INT64_MIN, UINT64_MAX)
    if isinstance(value, float):
        if not math.isfinite(value):
            _fail(f"{name} must be a finite number")
        return value
    if isinstance(value, list | tuple):
        return [_plain(v, name, depth + 1) for v in value]
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if isinstance(k, bool) or not isinstance(k, int | str):
                _fail(f"{name} map keys must be integers or text")
            out[k] = _plain(v, name, depth + 1)
        return out
    _fail(f"{name} holds a {type(value).__name__}, not a plain CBOR value")


def _args(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        _fail(f"{name} must be a map")
    if len(value) > MAX_MAP_ENTRIES:
        _fail(f"{name} has more than {MAX_MAP_ENTRIES} entries")
    out: dict[str, Any] = {}
    for k, v in value.items():
        _text(k, f"{name} key", 1, MAX_NAME)
        out[k] = _plain(v, f"{name}[{k}]", 1)
    return out


def _keys(
    obj: object, what: str, required: set[str], optional: set[str] | None = None
) -> dict[str, Any]:
    """``obj`` as a dict with exactly the ``required`` keys plus any of ``optional``."""
    if not isinstance(obj, Mapping):
        _fail(f"{what} must be a map")
    obj = dict(obj)
    keys = set(obj)
    allowed = required | (optional or set())
    if not required <= keys or not keys <= allowed:
        missing = sorted(str(k) for k in required - keys)
        extra = sorted(str(k) for k in keys - allowed)
        _fail(f"{what}: missing {missing}, unexpected {extra}")
    return obj


@contextlib.contextmanager
def _local(what: str) -> Iterator[None]:
    """Field errors while building a message locally are our bug."""
    try:
        yield
    except _Invalid as exc:
        raise MessageEncodingError(f"{what}: {exc}") from None


@contextlib.contextmanager
def _remote(what: str) -> Iterator[None]:
    """Field errors while reading a peer's message are the peer's fault."""
    try:
        yield
    except _Invalid as exc:
        raise WireError(f"{what}: {exc}") from None
    except MessageEncodingError as exc:
        raise WireError(exc.message) from None


# --------------------------------------------------------------------------------------------
# Base
# --------------------------------------------------------------------------------------------
class Message:
    """Base of the top-level messages: CBOR in and out, schema rule, size limits."""

    RULE: ClassVar[str]
    MAX_SIZE: ClassVar[int] = DEFAULT_MAX_SIZE
    MAX_ITEMS: ClassVar[int] = 4096
    MAX_DEPTH: ClassVar[int] = DEFAULT_MAX_DEPTH

    def _check(self) -> None:
        raise NotImplementedError

    def __post_init__(self) -> None:
        # _local's handling, inline: this runs for every message built (a contextmanager per
        # record was a tenth of a tx record's decode)
        try:
            self._check()
        except _Invalid as exc:
            raise MessageEncodingError(f"{type(self).__name__}: {exc}") from None

    def to_obj(self) -> dict[str, Any]:
        """The message as plain CBOR-ready values."""
        raise NotImplementedError

    @classmethod
    def _from_obj(cls, obj: Any) -> Self:
        raise NotImplementedError

    @classmethod
    def from_obj(cls, obj: Any) -> Self:
        """Build from a decoded value; ``WireError`` if it is not a valid message."""
        try:  # _remote's handling, inline (see __post_init__)
            return cls._from_obj(obj)
        except _Invalid as exc:
            raise WireError(f"{cls.RULE}: {exc}") from None
        except MessageEncodingError as exc:
            raise WireError(exc.message) from None

    def to_cbor(self) -> bytes:
        """Deterministic CBOR."""
        return encode(self.to_obj())

    @classmethod
    def from_cbor(cls, data: bytes, *, validate: bool = False, max_size: int | None = None) -> Self:
        """Decode hostile bytes; ``validate=True`` also checks against the CDDL (zcbor).

        ``max_size`` overrides the class limit (the API server passes its frame maximum).
        """
        obj = decode(
            data,
            max_size=cls.MAX_SIZE if max_size is None else max_size,
            max_items=cls.MAX_ITEMS,
            max_depth=cls.MAX_DEPTH,
        )
        msg = cls.from_obj(obj)
        if validate:
            schema.validate(cls.RULE, obj)
        return msg


# --------------------------------------------------------------------------------------------
# ssc/v1/<t>/tx
# --------------------------------------------------------------------------------------------
def _uuid_text(value: object, name: str) -> str:
    """RFC 9562 UUID in its canonical 36-character lower-case text form (8-4-4-4-12)."""
    if (
        not isinstance(value, str)
        or len(value) != 36
        or value[8] + value[13] + value[18] + value[23] != "----"
        # every other character a lower-case hex digit (str.strip: C speed, no regex)
        or (value[:8] + value[9:13] + value[14:18] + value[19:23] + value[24:]).strip(_HEX_LOWER)
    ):
        _fail(f"{name} must be a lower-case UUID in canonical text form")
    return value


def _card_hex(value: object, name: str) -> str:
    if not isinstance(value, str) or len(value) != 32 or value.strip(_HEX_UPPER):
        _fail(f"{name} must be 32 upper-case hex digits")
    return value


def _opt(check: Any, value: object, name: str, *args: Any) -> None:
    if value is not None:
        check(value, name, *args)


_HEX_UPPER = "0123456789ABCDEF"
_HEX_LOWER = "0123456789abcdef"
#: In deterministic CBOR a tx record starts with its map header, then "v" (the only 1-byte key),
#: then "mac" (the only other key that sorts before "seq"): 61 76 01, 63 6d 61 63 48 <8 bytes>.
_TX_V_MEMBER = b"\x61v\x01"
_TX_MAC_MEMBER = b"\x63mac\x48"
_TX_BODY_AT = 1 + len(_TX_V_MEMBER) + len(_TX_MAC_MEMBER) + 8
#: "pii" sorts right after "mac" (63 6d… < 63 70… < 63 73 "seq"): when present, it is the third
#: member, so the body is still one contiguous run of bytes after it.
_TX_PII_KEY = b"\x63pii"
#: The ``pii`` member's size bounds (``agent.wire.pii``: HPKE's 32-byte encapsulated key and
#: 16-byte tag around 40..900 bytes of sealed personal data).
PII_MIN_SIZE = 32 + 16 + 40
PII_MAX_SIZE = 32 + 16 + 900


def _bstr_head(n: int) -> bytes:
    """The deterministic head of a byte string of ``n`` bytes (``n`` < 65,536)."""
    if n < 24:
        return bytes((0x40 + n,))
    if n < 0x100:
        return bytes((0x58, n))
    return b"\x59" + n.to_bytes(2, "big")


def _skip_bstr(buf: bytes, at: int) -> int:
    """The offset after the byte string whose head is at ``at``; ``WireError`` if none is."""
    head = buf[at] if at < len(buf) else 0
    if 0x40 <= head < 0x58:
        n, at = head - 0x40, at + 1
    elif head == 0x58 and at + 2 <= len(buf):
        n, at = buf[at + 1], at + 2
    elif head == 0x59 and at + 3 <= len(buf):
        n, at = int.from_bytes(buf[at + 1 : at + 3], "big"), at + 3
    else:
        raise WireError("not a deterministically encoded tx record")
    if at + n > len(buf):
        raise WireError("not a deterministically encoded tx record")
    return at + n


@dataclass(frozen=True, slots=True)
class TxMessage(Message):
    """A sealed journal record as sent on ``ssc/v1/<terminal>/tx`` (``tx-record``).

    Exactly the journal's sealed body (``agent.journal.codec.BODY_FIELDS``: same names, types
    and units) plus ``mac``. Times are Unix **milliseconds**; ``tx_id`` is the UUID text form;
    ``card_id_code`` is 32 upper-case hex digits or null (a loss report with the card absent);
    optional values are present as null, so the key set is fixed. No personal data in the
    clear: the body carries ``personal_digest`` = SHA-256(random salt ‖ canonical CBOR of the
    personal data), which cannot be reversed, and a loss report made without the card carries
    the data itself in ``pii``, sealed to central's key (``agent.wire.pii``), the one member
    besides ``mac`` that is not part of the body.

    ``body_cbor()`` is the message without ``mac`` and ``pii`` (deterministic CBOR) = the bytes
    the journal stored and hashed; ``digest()`` = SHA-256 of it, MAC'd by the security module
    and the next record's ``prev_hash``.
    """

    RULE: ClassVar[str] = "tx-record"

    terminal_id: str
    seq: int
    prev_hash: bytes
    tx_id: str
    kind: str
    outcome: str
    offline: bool
    created_at: int
    completed_at: int
    mac: bytes
    card_id_code: str | None = None
    reason: str | None = None
    result: str | None = None
    error_code: str | None = None
    idempotency_key: str | None = None
    auth_id: str | None = None
    personal_digest: bytes | None = None
    pii: bytes | None = None

    #: The keys of the body (the message without ``mac`` and ``pii``).
    BODY_KEYS: ClassVar[frozenset[str]] = frozenset(
        {
            "v", "seq", "prev_hash", "tx_id", "terminal_id", "kind", "outcome", "card_id_code",
            "reason", "offline", "created_at", "completed_at", "idempotency_key", "result",
            "error_code", "auth_id", "personal_digest",
        }
    )  # fmt: skip

    def _check(self) -> None:
        _terminal(self.terminal_id, "terminal_id")
        _uint(self.seq, "seq", 1)
        _bytes(self.prev_hash, "prev_hash", 32)
        _uuid_text(self.tx_id, "tx_id")
        _choice(self.kind, "kind", TX_KINDS)
        _choice(self.outcome, "outcome", TX_OUTCOMES)
        _bool(self.offline, "offline")
        _uint(self.created_at, "created_at")
        _uint(self.completed_at, "completed_at")
        _bytes(self.mac, "mac", 8)
        # the optional fields, _opt inline (most are null in most records)
        if self.card_id_code is not None:
            _card_hex(self.card_id_code, "card_id_code")
        if self.reason is not None:
            _text(self.reason, "reason")
        if self.result is not None:
            _text(self.result, "result")
        if self.error_code is not None:
            _text(self.error_code, "error_code")
        if self.idempotency_key is not None:
            _text(self.idempotency_key, "idempotency_key", 1, MAX_IDEMPOTENCY_KEY)
        if self.auth_id is not None:
            _text(self.auth_id, "auth_id")
        if self.personal_digest is not None:
            _bytes(self.personal_digest, "personal_digest", 32)
        if self.pii is not None:
            _bytes(self.pii, "pii", None, PII_MAX_SIZE)
            if len(self.pii) < PII_MIN_SIZE:
                _fail(f"pii shorter than {PII_MIN_SIZE} bytes")
            if self.personal_digest is None:
                _fail("pii needs the personal_digest that binds it to the record")

    @classmethod
    def from_body(cls, fields: Mapping[str, Any], mac: bytes) -> Self:
        """Build from a sealed body's fields (as the journal decodes them) and its MAC.

        The field set must be exactly :attr:`BODY_KEYS`; anything else is
        ``MessageEncodingError`` (the journal sealed something the wire cannot carry: our bug).
        """
        with _local("TxMessage"):
            m = _keys(fields, "sealed body", set(cls.BODY_KEYS))
            _uint(m.pop("v"), "v", SCHEMA_VERSION, SCHEMA_VERSION)
        return cls(mac=mac, **m)

    def body_obj(self) -> dict[str, Any]:
        """The record without ``mac``: what is hashed."""
        return {
            "v": SCHEMA_VERSION,
            "seq": self.seq,
            "kind": self.kind,
            "tx_id": self.tx_id,
            "reason": self.reason,
            "result": self.result,
            "auth_id": self.auth_id,
            "offline": self.offline,
            "outcome": self.outcome,
            "prev_hash": self.prev_hash,
            "created_at": self.created_at,
            "error_code": self.error_code,
            "terminal_id": self.terminal_id,
            "card_id_code": self.card_id_code,
            "completed_at": self.completed_at,
            "idempotency_key": self.idempotency_key,
            "personal_digest": self.personal_digest,
        }

    def body_cbor(self) -> bytes:
        """Deterministic CBOR of the record without ``mac`` (= the journal's stored body)."""
        return encode(self.body_obj())

    @staticmethod
    def body_of(cbor: bytes) -> bytes:
        """The body (the record without ``mac`` and ``pii``) cut out of a message's
        deterministic CBOR.

        Byte for byte ``body_cbor()`` without encoding again: the ``mac`` member (and the
        ``pii`` member right after it) are removed and the map header is smaller by as many.
        ``cbor`` must be a deterministic encoding of a valid message (``to_cbor()``, or bytes
        equal to it); anything else raises ``WireError``.
        """
        head = cbor[0] if cbor else 0
        if (
            not 0xA1 < head < 0xB8
            or cbor[1:4] != _TX_V_MEMBER
            or cbor[4 : 4 + len(_TX_MAC_MEMBER)] != _TX_MAC_MEMBER
        ):
            raise WireError("not a deterministically encoded tx record")
        at = _TX_BODY_AT
        if cbor[at : at + len(_TX_PII_KEY)] == _TX_PII_KEY:
            at = _skip_bstr(cbor, at + len(_TX_PII_KEY))
            head -= 1
            if head <= 0xA1:
                raise WireError("not a deterministically encoded tx record")
        return bytes((head - 1,)) + cbor[1:4] + cbor[at:]

    @staticmethod
    def with_mac(body: bytes, mac: bytes, pii: bytes | None = None) -> bytes:
        """The message's deterministic CBOR from a body's, its 8-byte ``mac`` and, for a record
        whose personal data goes to central, its ``pii``: the inverse of :meth:`body_of`,
        without encoding again (``mac`` sorts right after ``v``, ``pii`` right after ``mac``).

        ``body`` must be a deterministic encoding of a valid body (``body_cbor()``, or bytes
        equal to it); a body that does not start like one raises ``MessageEncodingError``.
        """
        head = body[0] if body else 0
        if not 0xA0 < head < 0xB7 or body[1:4] != _TX_V_MEMBER or len(mac) != 8:
            raise MessageEncodingError("not a deterministically encoded tx body and MAC")
        if pii is None:
            return bytes((head + 1,)) + _TX_V_MEMBER + _TX_MAC_MEMBER + bytes(mac) + body[4:]
        if head == 0xB6 or not PII_MIN_SIZE <= len(pii) <= PII_MAX_SIZE:
            raise MessageEncodingError(f"pii of {len(pii)} bytes is outside the wire's bounds")
        return b"".join(
            (
                bytes((head + 2,)), _TX_V_MEMBER, _TX_MAC_MEMBER, bytes(mac),
                _TX_PII_KEY, _bstr_head(len(pii)), bytes(pii), body[4:],
            )
        )  # fmt: skip

    def digest(self) -> bytes:
        """SHA-256 of ``body_cbor()``: the value MAC'd and the next record's ``prev_hash``."""
        return hashlib.sha256(self.body_cbor()).digest()

    def to_obj(self) -> dict[str, Any]:
        obj = {**self.body_obj(), "mac": self.mac}
        if self.pii is not None:
            obj["pii"] = self.pii
        return obj

    @classmethod
    def _from_obj(cls, obj: Any) -> Self:
        m = _keys(obj, "tx record", _TX_KEYS, _TX_OPTIONAL)
        _uint(m.pop("v"), "v", SCHEMA_VERSION, SCHEMA_VERSION)
        return cls(**m)


#: A tx record's keys (``_keys`` takes sets; built once, not per record).
_TX_KEYS = set(TxMessage.BODY_KEYS) | {"mac"}
_TX_OPTIONAL = {"pii"}


# --------------------------------------------------------------------------------------------
# ssc/v1/<t>/event, status, telemetry
# --------------------------------------------------------------------------------------------
#: The event type whose ``data`` has a fixed shape (:class:`AuthorizationRequest`).
AUTHORIZATION_REQUEST = "authorization_request"


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """The ``data`` of an ``authorization_request`` event: the agent asks central online for a
    signed authorization of ``kind`` for one card (ISSUE 4; DESIGN §5).

    ``request_id`` is a 16-byte binary UUID (the agent makes a UUIDv7) that central's answer
    names when it refuses (``authorization_refused``); a grant is an ordinary ``authorize``
    command for this card and kind. ``card_id_code`` is the card identification code, binary.
    """

    request_id: bytes
    kind: str
    card_id_code: bytes

    def __post_init__(self) -> None:
        with _local("AuthorizationRequest"):
            self._check()

    def _check(self) -> None:
        _bytes(self.request_id, "request_id", 16)
        _choice(self.kind, "kind", AUTHORIZE_KINDS)
        _bytes(self.card_id_code, "card_id_code", 16)

    def to_data(self) -> dict[str, Any]:
        return {"kind": self.kind, "request_id": self.request_id, "card_id_code": self.card_id_code}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> AuthorizationRequest:
        """From an event's ``data``; ``WireError`` unless it has exactly this shape."""
        with _remote("authorization-request"):
            m = _keys(data, "authorization_request data", {"kind", "request_id", "card_id_code"})
            return cls(m["request_id"], m["kind"], m["card_id_code"])


@dataclass(frozen=True, slots=True)
class EventMessage(Message):
    """An event on ``ssc/v1/<terminal>/event``; ``data`` holds no personal data (masked).

    ``data`` is an open map, except for ``authorization_request``, whose data is exactly an
    :class:`AuthorizationRequest` (``authorization-request`` in the CDDL).
    """

    RULE: ClassVar[str] = "event"

    terminal: str
    id: bytes
    time: int
    type: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def _check(self) -> None:
        _terminal(self.terminal)
        _bytes(self.id, "id", 16)
        _uint(self.time, "time")
        _choice(self.type, "type", EVENT_TYPES)
        object.__setattr__(self, "data", _data_map(self.data, "data"))
        if self.type == AUTHORIZATION_REQUEST:
            m = _keys(
                self.data, "authorization_request data", {"kind", "request_id", "card_id_code"}
            )
            _bytes(m["request_id"], "request_id", 16)
            _choice(m["kind"], "kind", AUTHORIZE_KINDS)
            _bytes(m["card_id_code"], "card_id_code", 16)

    def authorization_request(self) -> AuthorizationRequest:
        """The request of an ``authorization_request`` event (``WireError`` for another type)."""
        if self.type != AUTHORIZATION_REQUEST:
            raise WireError(f"a {self.type} event is not an authorization request")
        return AuthorizationRequest.from_data(self.data)

    def to_obj(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "data": dict(self.data),
            "time": self.time,
            "type": self.type,
            "terminal": self.terminal,
        }

    @classmethod
    def _from_obj(cls, obj: Any) -> Self:
        m = _keys(obj, "event", {"id", "data", "time", "type", "terminal"})
        return cls(m["terminal"], m["id"], m["time"], m["type"], m["data"])


@dataclass(frozen=True, slots=True)
class StatusMessage(Message):
    """Retained ``ssc/v1/<terminal>/status``; with ``online=False`` it is the last will."""

    RULE: ClassVar[str] = "status"

    terminal: str
    online: bool
    version: str
    time: int
    health: Mapping[str, Any] = field(default_factory=dict)

    def _check(self) -> None:
        _terminal(self.terminal)
        _bool(self.online, "online")
        _text(self.version, "version", 1, 32)
        _uint(self.time, "time")
        object.__setattr__(self, "health", _data_map(self.health, "health"))

    def to_obj(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "health": dict(self.health),
            "online": self.online,
            "version": self.version,
            "terminal": self.terminal,
        }

    @classmethod
    def _from_obj(cls, obj: Any) -> Self:
        m = _keys(obj, "status", {"time", "health", "online", "version", "terminal"})
        return cls(m["terminal"], m["online"], m["version"], m["time"], m["health"])


@dataclass(frozen=True, slots=True)
class TelemetryMessage(Message):
    """Counters on ``ssc/v1/<terminal>/telemetry`` (QoS 0)."""

    RULE: ClassVar[str] = "telemetry"

    terminal: str
    time: int
    counters: Mapping[str, int] = field(default_factory=dict)

    def _check(self) -> None:
        _terminal(self.terminal)
        _uint(self.time, "time")
        if not isinstance(self.counters, Mapping):
            _fail("counters must be a map")
        if len(self.counters) > MAX_MAP_ENTRIES:
            _fail(f"counters has more than {MAX_MAP_ENTRIES} entries")
        for k, v in self.counters.items():
            _text(k, "counter name", 1, MAX_NAME)
            _uint(v, f"counter {k}")
        object.__setattr__(self, "counters", dict(self.counters))

    def to_obj(self) -> dict[str, Any]:
        return {"time": self.time, "counters": dict(self.counters), "terminal": self.terminal}

    @classmethod
    def _from_obj(cls, obj: Any) -> Self:
        m = _keys(obj, "telemetry", {"time", "counters", "terminal"})
        return cls(m["terminal"], m["time"], m["counters"])


# --------------------------------------------------------------------------------------------
# inbound ssc/v1/<t>/ack
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AckMessage(Message):
    """Central's acknowledgement of sealed records: inclusive ``(from, to)`` seq ranges."""

    RULE: ClassVar[str] = "ack"
    MAX_SIZE: ClassVar[int] = 8 * 1024

    terminal: str
    ranges: tuple[tuple[int, int], ...]

    def _check(self) -> None:
        _terminal(self.terminal)
        if not isinstance(self.ranges, list | tuple):
            _fail("ranges must be an array")
        if not 1 <= len(self.ranges) <= MAX_ACK_RANGES:
            _fail(f"ranges must hold 1..{MAX_ACK_RANGES} ranges")
        out = []
        for r in self.ranges:
            if not isinstance(r, list | tuple) or len(r) != 2:
                _fail("a range is [from, to]")
            lo = _uint(r[0], "range from", 1)
            hi = _uint(r[1], "range to", 1)
            if lo > hi:
                _fail("a range must have from <= to")
            out.append((lo, hi))
        object.__setattr__(self, "ranges", tuple(out))

    def to_obj(self) -> dict[str, Any]:
        return {"ranges": [list(r) for r in self.ranges], "terminal": self.terminal}

    @classmethod
    def _from_obj(cls, obj: Any) -> Self:
        m = _keys(obj, "ack", {"ranges", "terminal"})
        return cls(m["terminal"], m["ranges"])


def ack_ranges(data: bytes, terminal: str) -> list[tuple[int, int]]:
    """Decode an ack for ``terminal`` (the uplink's ``decode_ack``); ``WireError`` otherwise."""
    msg = AckMessage.from_cbor(data)
    if msg.terminal != terminal:
        raise WireError("ack is for another terminal")
    return list(msg.ranges)


# --------------------------------------------------------------------------------------------
# A batch of tx records in one message (messages.cddl ``tx-batch``)
# --------------------------------------------------------------------------------------------
#: Records per batch message, and the batch's size bound (the decoder's, 64 KiB). Batches are
#: opt-in (``uplink.batch_max``): a backlog's consecutive records in fewer, larger MQTT messages
#: (docs/MESSAGES.md "Batches").
TX_BATCH_MAX = 64
TX_BATCH_MAX_SIZE = DEFAULT_MAX_SIZE
_CBOR_ARRAY = 0x80  # major type 4 in the initial byte; a tx-record is a map (major type 5)


def encode_tx_batch(payloads: Sequence[bytes]) -> bytes:
    """``tx-batch``: 2..TX_BATCH_MAX record payloads, each carried as a byte string holding the
    record's exact bytes (so central hashes what the terminal sealed, nothing re-encoded)."""
    if not 2 <= len(payloads) <= TX_BATCH_MAX:
        raise MessageEncodingError(f"a tx batch holds 2..{TX_BATCH_MAX} records")
    out = encode([bytes(p) for p in payloads])
    if len(out) > TX_BATCH_MAX_SIZE:
        raise MessageEncodingError(f"tx batch of {len(out)} bytes exceeds {TX_BATCH_MAX_SIZE}")
    return out


def split_tx_payload(payload: bytes) -> list[bytes]:
    """The record payloads in a ``tx`` message: itself when it is one record (a CBOR map), the
    elements of a ``tx-batch`` (a CBOR array of byte strings). Each record is then checked by
    ``parse_tx``; a malformed batch as a whole is ``WireError``."""
    data = bytes(payload)
    if not data or data[0] & 0xE0 != _CBOR_ARRAY:
        return [data]
    # deterministic like each record in it (so a batch has one encoding)
    items = decode_deterministic(data, max_size=TX_BATCH_MAX_SIZE, max_depth=2)
    if not isinstance(items, list) or not 2 <= len(items) <= TX_BATCH_MAX:
        raise WireError(f"a tx batch holds 2..{TX_BATCH_MAX} records")
    if not all(isinstance(i, bytes) for i in items):
        raise WireError("a tx batch holds byte strings")
    return items


# --------------------------------------------------------------------------------------------
# Commands (the payload of a COSE_Sign1 on ssc/v1/<t>/cmd and ssc/v1/all/blacklist)
# --------------------------------------------------------------------------------------------
class _Body:
    """A command body: ``TYPE`` is the command's ``type`` string."""

    TYPE: ClassVar[str]

    def __post_init__(self) -> None:
        with _local(type(self).__name__):
            self._check()

    def _check(self) -> None:
        """Bodies without fields have nothing to check."""

    def to_obj(self) -> dict[str, Any]:
        return {}

    @classmethod
    def _from_obj(cls, obj: Any) -> Self:
        _keys(obj, f"{cls.TYPE} body", set())
        return cls()


@dataclass(frozen=True, slots=True)
class BlacklistSnapshot(_Body):
    """The whole blacklist at ``version`` (replaces the local table)."""

    TYPE: ClassVar[str] = "blacklist_snapshot"
    version: int
    entries: tuple[bytes, ...]

    def _check(self) -> None:
        _uint(self.version, "version")
        object.__setattr__(
            self, "entries", _card_ids(self.entries, "entries", MAX_SNAPSHOT_ENTRIES)
        )

    def to_obj(self) -> dict[str, Any]:
        return {"entries": list(self.entries), "version": self.version}

    @classmethod
    def _from_obj(cls, obj: Any) -> Self:
        m = _keys(obj, "blacklist_snapshot body", {"entries", "version"})
        return cls(m["version"], m["entries"])


@dataclass(frozen=True, slots=True)
class BlacklistDelta(_Body):
    """Changes from ``base_version`` to ``version``; applies only at ``base_version``."""

    TYPE: ClassVar[str] = "blacklist_delta"
    base_version: int
    version: int
    add: tuple[bytes, ...] = ()
    remove: tuple[bytes, ...] = ()

    def _check(self) -> None:
        _uint(self.base_version, "base_version")
        _uint(self.version, "version")
        if self.version <= self.base_version:
            _fail("version must be greater than base_version")
        add = _card_ids(self.add, "add", MAX_DELTA_ENTRIES)
        remove = _card_ids(self.remove, "remove", MAX_DELTA_ENTRIES)
        if set(add) & set(remove):
            _fail("an entry is both added and removed")
        object.__setattr__(self, "add", add)
        object.__setattr__(self, "remove", remove)

    def to_obj(self) -> dict[str, Any]:
        return {
            "add": list(self.add),
            "remove": list(self.remove),
            "version": self.version,
            "base_version": self.base_version,
        }

    @classmethod
    def _from_obj(cls, obj: Any) -> Self:
        m = _keys(obj, "blacklist_delta body", {"add", "remove", "version", "base_version"})
        return cls(m["base_version"], m["version"], m["add"], m["remove"])


@dataclass(frozen=True, slots=True)
class Authorize(_Body):
    """A signed authorization for an unlock / PIN reset / PIN unblock of one card: pushed
    ahead (used offline) or central's grant of an ``authorization_request``."""

    TYPE: ClassVar[str] = "authorize"
    kind: str
    card_id_code: bytes
    expires: int

    def _check(self) -> None:
        _choice(self.kind, "kind", AUTHORIZE_KINDS)
        _bytes(self.card_id_code, "card_id_code", 16)
        _uint(self.expires, "expires")

    def to_obj(self) -> dict[str, Any]:
        return {"kind": self.kind, "expires": self.expires, "card_id_code": self.card_id_code}

    @classmethod
    def _from_obj(cls, obj: Any) -> Self:
        m = _keys(obj, "authorize body", {"kind", "expires", "card_id_code"})
        return cls(m["kind"], m["card_id_code"], m["expires"])


@dataclass(frozen=True, slots=True)
class AuthorizationRefused(_Body):
    """Central's signed refusal of an online authorization request (``request_id`` of the
    ``authorization_request`` event): the agent stops waiting and refuses the operation.

    ``reason``: ``card_replaced`` (the agent also blacklists the card as replaced, for good),
    ``formal_loss`` (blacklisted as a formal loss until central's list says otherwise) or
    ``denied`` (no reason given).
    """

    TYPE: ClassVar[str] = "authorization_refused"
    kind: str
    reason: str
    request_id: bytes
    card_id_code: bytes

    def _check(self) -> None:
        _choice(self.kind, "kind", AUTHORIZE_KINDS)
        _choice(self.reason, "reason", REFUSAL_REASONS)
        _bytes(self.request_id, "request_id", 16)
        _bytes(self.card_id_code, "card_id_code", 16)

    def to_obj(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "reason": self.reason,
            "request_id": self.request_id,
            "card_id_code": self.card_id_code,
        }

    @classmethod
    def _from_obj(cls, obj: Any) -> Self:
        m = _keys(
            obj, "authorization_refused body", {"kind", "reason", "request_id", "card_id_code"}
        )
        return cls(m["kind"], m["reason"], m["request_id"], m["card_id_code"])


@dataclass(frozen=True, slots=True)
class CardReplaced(_Body):
    """The card was replaced (补换卡): the old card's code, to refuse it from now on."""

    TYPE: ClassVar[str] = "card_replaced"
    card_id_code: bytes

    def _check(self) -> None:
        _bytes(self.card_id_code, "card_id_code", 16)

    def to_obj(self) -> dict[str, Any]:
        return {"card_id_code": self.card_id_code}

    @classmethod
    def _from_obj(cls, obj: Any) -> Self:
        m = _keys(obj, "card_replaced body", {"card_id_code"})
        return cls(m["card_id_code"])


@dataclass(frozen=True, slots=True)
class ConfigSet(_Body):
    """Change one of :data:`CONFIG_SETTINGS` at run time."""

    TYPE: ClassVar[str] = "config_set"
    key: str
    value: str | int | bool

    def _check(self) -> None:
        if not isinstance(self.key, str) or self.key not in CONFIG_SETTINGS:
            _fail(f"key must be one of {', '.join(CONFIG_SETTINGS)}")
        allowed = CONFIG_SETTINGS[self.key]
        if allowed is bool:
            _bool(self.value, self.key)
        elif isinstance(allowed, range):
            _uint(self.value, self.key, allowed.start, allowed.stop - 1)
        elif isinstance(allowed, tuple):
            _choice(self.value, self.key, allowed)

    def to_obj(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value}

    @classmethod
    def _from_obj(cls, obj: Any) -> Self:
        m = _keys(obj, "config_set body", {"key", "value"})
        return cls(m["key"], m["value"])


@dataclass(frozen=True, slots=True)
class Ping(_Body):
    """Answer with a ``pong`` event."""

    TYPE: ClassVar[str] = "ping"


@dataclass(frozen=True, slots=True)
class Report(_Body):
    """Publish status and telemetry now."""

    TYPE: ClassVar[str] = "report"


@dataclass(frozen=True, slots=True)
class Resend(_Body):
    """Publish every unacked record from ``from_seq`` on again."""

    TYPE: ClassVar[str] = "resend"
    from_seq: int

    def _check(self) -> None:
        _uint(self.from_seq, "from_seq", 1)

    def to_obj(self) -> dict[str, Any]:
        return {"from_seq": self.from_seq}

    @classmethod
    def _from_obj(cls, obj: Any) -> Self:
        m = _keys(obj, "resend body", {"from_seq"})
        return cls(m["from_seq"])


CommandBody: TypeAlias = (
    BlacklistSnapshot
    | BlacklistDelta
    | Authorize
    | AuthorizationRefused
    | CardReplaced
    | ConfigSet
    | Ping
    | Report
    | Resend
)
_BODIES: Mapping[str, type[_Body]] = {
    cls.TYPE: cls
    for cls in (
        BlacklistSnapshot,
        BlacklistDelta,
        Authorize,
        AuthorizationRefused,
        CardReplaced,
        ConfigSet,
        Ping,
        Report,
        Resend,
    )
}


@dataclass(frozen=True, slots=True)
class Command(Message):
    """A command from central (``command``): the payload of a COSE_Sign1.

    ``counter`` is strictly increasing per issuer; ``terminal`` is the target or ``"all"``;
    ``issued`` and ``expires`` are epoch seconds. Signature, binding, freshness and replay are
    checked by :class:`agent.wire.commands.CommandVerifier`.
    """

    RULE: ClassVar[str] = "command"
    MAX_SIZE: ClassVar[int] = MAX_COMMAND_SIZE
    MAX_ITEMS: ClassVar[int] = MAX_COMMAND_ITEMS

    id: bytes
    terminal: str
    counter: int
    issued: int
    expires: int
    body: CommandBody

    @property
    def type(self) -> str:
        """The command's ``type`` string."""
        return self.body.TYPE

    def _check(self) -> None:
        _bytes(self.id, "id", 16)
        _terminal(self.terminal, allow_all=True)
        _uint(self.counter, "counter")
        _uint(self.issued, "issued")
        _uint(self.expires, "expires")
        if self.expires <= self.issued:
            _fail("a command must expire after it was issued")
        if not isinstance(self.body, tuple(_BODIES.values())):
            _fail("body must be a command body")

    def to_obj(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "body": self.body.to_obj(),
            "type": self.body.TYPE,
            "issued": self.issued,
            "counter": self.counter,
            "expires": self.expires,
            "terminal": self.terminal,
        }

    @classmethod
    def _from_obj(cls, obj: Any) -> Self:
        m = _keys(
            obj, "command", {"id", "body", "type", "issued", "counter", "expires", "terminal"}
        )
        body_cls = _BODIES.get(m["type"]) if isinstance(m["type"], str) else None
        if body_cls is None:
            _fail(f"type must be one of {', '.join(_BODIES)}")
        body: Any = body_cls._from_obj(m["body"])
        return cls(m["id"], m["terminal"], m["counter"], m["issued"], m["expires"], body)


# --------------------------------------------------------------------------------------------
# Local API frames (DESIGN §6)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ApiRequest(Message):
    """``{"id", "op", "args"}`` from an API client."""

    RULE: ClassVar[str] = "api-request"

    id: int
    op: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def _check(self) -> None:
        _uint(self.id, "id", 0, UINT32_MAX)
        _text(self.op, "op", 1, MAX_NAME)
        object.__setattr__(self, "args", _args(self.args, "args"))

    def to_obj(self) -> dict[str, Any]:
        return {"id": self.id, "op": self.op, "args": dict(self.args)}

    @classmethod
    def _from_obj(cls, obj: Any) -> Self:
        m = _keys(obj, "request", {"id", "op", "args"})
        return cls(m["id"], m["op"], m["args"])


@dataclass(frozen=True, slots=True)
class ApiResponse(Message):
    """``{"id", "ok": true, "result"}`` or ``{"id", "ok": false, "error": {"code", "message"}}``.

    ``id`` is None only in an error answering a frame too broken to carry an id.
    """

    RULE: ClassVar[str] = "api-response"

    id: int | None
    ok: bool
    result: Any = None
    error_code: str | None = None
    error_message: str | None = None

    @classmethod
    def success(cls, request_id: int, result: Any = None) -> ApiResponse:
        return cls(request_id, True, result)

    @classmethod
    def failure(cls, request_id: int | None, code: str, message: str) -> ApiResponse:
        return cls(request_id, False, None, code, message)

    def _check(self) -> None:
        _bool(self.ok, "ok")
        if self.ok:
            _uint(self.id, "id", 0, UINT32_MAX)
            if self.error_code is not None or self.error_message is not None:
                _fail("a successful response has no error")
            object.__setattr__(self, "result", _plain(self.result, "result", 1))
        else:
            if self.id is not None:
                _uint(self.id, "id", 0, UINT32_MAX)
            if self.result is not None:
                _fail("an error response has no result")
            _text(self.error_code, "error code", 1, MAX_CODE)
            _text(self.error_message, "error message", 0, MAX_MESSAGE_TEXT)

    def to_obj(self) -> dict[str, Any]:
        if self.ok:
            return {"id": self.id, "ok": True, "result": self.result}
        return {
            "id": self.id,
            "ok": False,
            "error": {"code": self.error_code, "message": self.error_message},
        }

    @classmethod
    def _from_obj(cls, obj: Any) -> Self:
        if isinstance(obj, Mapping) and obj.get("ok") is False:
            m = _keys(obj, "response", {"id", "ok", "error"})
            err = _keys(m["error"], "response error", {"code", "message"})
            return cls(m["id"], False, None, err["code"], err["message"])
        m = _keys(obj, "response", {"id", "ok", "result"})
        if m["ok"] is not True:
            _fail("ok must be a bool")
        return cls(m["id"], True, m["result"])


@dataclass(frozen=True, slots=True)
class ApiEvent(Message):
    """An unsolicited ``{"event", "data"}`` to API clients."""

    RULE: ClassVar[str] = "api-event"

    event: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def _check(self) -> None:
        _text(self.event, "event", 1, MAX_NAME)
        object.__setattr__(self, "data", _args(self.data, "data"))

    def to_obj(self) -> dict[str, Any]:
        return {"data": dict(self.data), "event": self.event}

    @classmethod
    def _from_obj(cls, obj: Any) -> Self:
        m = _keys(obj, "api event", {"data", "event"})
        return cls(m["event"], m["data"])


def decode_client_frame(
    payload: bytes, *, max_size: int = DEFAULT_MAX_SIZE, validate: bool = False
) -> ApiResponse | ApiEvent:
    """A frame as an API client receives it: a response or an event."""
    obj = decode(payload, max_size=max_size, max_items=ApiResponse.MAX_ITEMS)
    cls: type[ApiResponse] | type[ApiEvent] = (
        ApiEvent if isinstance(obj, Mapping) and "event" in obj else ApiResponse
    )
    msg = cls.from_obj(obj)
    if validate:
        schema.validate(cls.RULE, obj)
    return msg
