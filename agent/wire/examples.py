"""One example of every message of ``messages.cddl`` (docs/MESSAGES.md, tests, integrators).

The values are fixed (ids, times, keys), so the bytes are stable: docs/MESSAGES.md shows them
in diagnostic notation and hex, and a test checks the document against :func:`examples`.
The signing key is the RFC 8032 §7.1 TEST 1 secret key: public, for examples only.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.wire import cose
from agent.wire.cbor import decode, diagnostic
from agent.wire.codec import (
    AckMessage,
    ApiEvent,
    ApiRequest,
    ApiResponse,
    AuthorizationRefused,
    AuthorizationRequest,
    Authorize,
    BlacklistDelta,
    BlacklistSnapshot,
    CardReplaced,
    Command,
    ConfigSet,
    EventMessage,
    Ping,
    Report,
    Resend,
    StatusMessage,
    TelemetryMessage,
    TxMessage,
    encode_tx_batch,
)
from agent.wire.pii import personal_digest

__all__ = ["EXAMPLE_KID", "Example", "example_signing_key", "examples"]

EXAMPLE_KID = b"central-2025"
_TEST1_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
TERMINAL = "440300000001"
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
CARD_A = bytes.fromhex("440300d15600000586001a2b3c4d5e6f")
CARD_B = bytes.fromhex("110000d156000005860099aabbccddee")
TX_ID = bytes.fromhex("019b7a4e1c007d3a8f2b4c5d6e7f8091")
T0_MS = T0 * 1000  # tx records count milliseconds
TX_ID_TEXT = "019b7a4e-1c00-7d3a-8f2b-4c5d6e7f8091"
TX_ID_LOSS = "019b7a4e-1c3c-7d3a-9a0b-1c2d3e4f5061"
TX_ID_PIN = "019b7a4e-1c78-7e01-b2c3-d4e5f6071829"
EVENT_ID = bytes.fromhex("019b7a4e1c427a11b2c3d4e5f6071829")
CMD_ID = bytes.fromhex("019b7a4d00007cc0a1b2c3d4e5f60718")
#: An online authorization request: the event id is the request id.
REQUEST_ID = bytes.fromhex("019b7a4e1c4e7b22a3c4d5e6f7081920")
PREV_HASH = bytes.fromhex("5f" * 32)
MAC = bytes.fromhex("1a2b3c4d5e6f7081")


@dataclass(frozen=True, slots=True)
class Example:
    """A named example: the CDDL rule it matches and its bytes."""

    title: str
    rule: str
    cbor: bytes

    @property
    def diagnostic(self) -> str:
        top_tag = cose.COSE_SIGN1_TAG if self.rule == "signed-command" else None
        return diagnostic(decode(self.cbor, max_size=1 << 20, top_tag=top_tag))


#: Central's personal-data key in the examples: RFC 7748 §6.1's "Bob" X25519 private key
#: (public knowledge; never for production).
EXAMPLE_PII_SECRET = bytes.fromhex(
    "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
)
#: The example loss report's personal data (a textbook sample ID number) and salt.
EXAMPLE_PERSONAL = {"ssn": "110101199003071234", "card_number": "A1234567X", "name": "张三"}
EXAMPLE_SALT = bytes(range(16))
#: ``seal_personal(EXAMPLE_PERSONAL, EXAMPLE_SALT, <that key's public key>, TERMINAL,
#: TX_ID_LOSS)``, made once: HPKE is randomised, a document's bytes must not change. It opens
#: with :data:`EXAMPLE_PII_SECRET` (tests/unit/wire/test_pii.py checks it does).
EXAMPLE_PII = bytes.fromhex(
    "9f1eb1dd11849e113b4b42910ec17003073771e28de910354ce85cdca135b87e1c76b1d68d6f422b341cece3"
    "b2ffba73f611377eeb27f8f1ca306ccb8b7a60fb7d74eae88a6e345303d53873271b3bc1a0d80591713c9ed6"
    "f9c40e589d1f27177c14529175ebd16721d1d5af08eeba0890ae2ba2dffd24d6d6b77ec03caa1f9935bb4c59"
    "53f08f5328b8"
)


def example_pii_key() -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(EXAMPLE_PII_SECRET)


def example_signing_key() -> Ed25519PrivateKey:
    """The RFC 8032 TEST 1 key (public knowledge; never for production)."""
    return Ed25519PrivateKey.from_private_bytes(_TEST1_SECRET)


def _command(body: object, counter: int, terminal: str = TERMINAL) -> Command:
    return Command(CMD_ID, terminal, counter, T0, T0 + 3600, body)  # type: ignore[arg-type]


def examples() -> list[Example]:
    """Every message kind, with the rule it must match."""
    lock = TxMessage(
        terminal_id=TERMINAL,
        seq=42,
        prev_hash=PREV_HASH,
        tx_id=TX_ID_TEXT,
        kind="lock",
        outcome="done",
        offline=True,
        created_at=T0_MS,
        completed_at=T0_MS + 850,
        mac=MAC,
        card_id_code=CARD_A.hex().upper(),
        reason="citizen_request",
        result="ok",
        idempotency_key="kiosk-1/7f3a",
    )
    loss = TxMessage(
        terminal_id=TERMINAL,
        seq=43,
        prev_hash=lock.digest(),
        tx_id=TX_ID_LOSS,
        kind="report_loss",
        outcome="done",
        offline=False,
        created_at=T0_MS + 60_000,
        completed_at=T0_MS + 60_012,
        mac=MAC,
        reason="holder",
        result="accepted",
        # SHA-256(salt || canonical CBOR of the personal data): binds, never reveals
        personal_digest=personal_digest(EXAMPLE_PERSONAL, EXAMPLE_SALT),
        # the same data, sealed for central's key alone (agent.wire.pii)
        pii=EXAMPLE_PII,
    )
    failed = TxMessage(
        terminal_id=TERMINAL,
        seq=44,
        prev_hash=loss.digest(),
        tx_id=TX_ID_PIN,
        kind="pin_unblock",
        outcome="failed",
        offline=True,
        created_at=T0_MS + 120_000,
        completed_at=T0_MS + 121_400,
        mac=MAC,
        card_id_code=CARD_A.hex().upper(),
        reason="central",
        result="declined",
        error_code="card_refused",
        auth_id=CMD_ID.hex(),
    )
    key = example_signing_key()
    commands = [
        ("blacklist_snapshot", _command(BlacklistSnapshot(7, (CARD_A, CARD_B)), 100, "all")),
        ("blacklist_delta", _command(BlacklistDelta(7, 8, (CARD_B,), (CARD_A,)), 101, "all")),
        ("authorize", _command(Authorize("unlock", CARD_A, T0 + 86_400), 102)),
        ("card_replaced", _command(CardReplaced(CARD_B), 103)),
        ("config_set", _command(ConfigSet("log.level", "DEBUG"), 104)),
        ("ping", _command(Ping(), 105)),
        ("report", _command(Report(), 106)),
        ("resend", _command(Resend(40), 107)),
        (
            "authorization_refused",
            _command(AuthorizationRefused("unlock", "card_replaced", REQUEST_ID, CARD_B), 108),
        ),
    ]
    out = [
        Example("tx: lock, card present, offline", "tx-record", lock.to_cbor()),
        Example(
            "tx: report_loss, card absent (personal data sealed for central: pii)",
            "tx-record",
            loss.to_cbor(),
        ),
        Example("tx: failed PIN unblock", "tx-record", failed.to_cbor()),
        Example(
            "tx-batch: the lock and the report_loss records in one message",
            "tx-batch",
            encode_tx_batch([lock.to_cbor(), loss.to_cbor()]),
        ),
        Example(
            "event: blacklist_hit",
            "event",
            EventMessage(
                TERMINAL,
                EVENT_ID,
                T0 + 5,
                "blacklist_hit",
                {"card": "4403****4d5e6f", "action": "auto_lock", "tx_seq": 45},
            ).to_cbor(),
        ),
        Example(
            "event: command_rejected",
            "event",
            EventMessage(
                TERMINAL,
                EVENT_ID,
                T0 + 6,
                "command_rejected",
                {"reason": "expired", "command_id": CMD_ID},
            ).to_cbor(),
        ),
        Example(
            "event: authorization_request",
            "event",
            EventMessage(
                TERMINAL,
                REQUEST_ID,
                T0 + 7,
                "authorization_request",
                AuthorizationRequest(REQUEST_ID, "unlock", CARD_A).to_data(),
            ).to_cbor(),
        ),
        Example(
            "status (retained)",
            "status",
            StatusMessage(
                TERMINAL,
                True,
                "0.1.0",
                T0,
                {"reader": "ok", "psam": "ok", "printer": "paper_low", "backlog": 3},
            ).to_cbor(),
        ),
        Example(
            "status: last will",
            "status",
            StatusMessage(TERMINAL, False, "0.1.0", T0, {}).to_cbor(),
        ),
        Example(
            "telemetry",
            "telemetry",
            TelemetryMessage(
                TERMINAL, T0 + 300, {"tx_done": 12, "tx_failed": 1, "apdus": 980}
            ).to_cbor(),
        ),
        Example("ack", "ack", AckMessage(TERMINAL, ((1, 41), (43, 44))).to_cbor()),
    ]
    for name, command in commands:
        out.append(Example(f"command: {name} (payload)", "command", command.to_cbor()))
    out.append(
        Example(
            "signed command: authorize (COSE_Sign1)",
            "signed-command",
            cose.sign(commands[2][1].to_cbor(), key, EXAMPLE_KID),
        )
    )
    out += [
        Example(
            "API request",
            "api-request",
            ApiRequest(7, "tx.lock", {"reader": "kiosk-1", "reason": "citizen_request"}).to_cbor(),
        ),
        Example(
            "API response: ok",
            "api-response",
            ApiResponse.success(7, {"tx_id": TX_ID, "state": "card_done"}).to_cbor(),
        ),
        Example(
            "API response: error",
            "api-response",
            ApiResponse.failure(7, "card_removed", "the card left the reader").to_cbor(),
        ),
        Example(
            "API event",
            "api-event",
            ApiEvent("card_inserted", {"reader": "kiosk-1"}).to_cbor(),
        ),
    ]
    return out


def markdown() -> str:
    """The examples section of docs/MESSAGES.md (regenerate it with this function)."""
    parts = []
    for ex in examples():
        parts.append(
            f"### {ex.title}\n\nRule `{ex.rule}`, {len(ex.cbor)} bytes.\n\n"
            f"```cbor-diag\n{ex.diagnostic}\n```\n\n```hex\n{ex.cbor.hex()}\n```\n"
        )
    return "\n".join(parts)
