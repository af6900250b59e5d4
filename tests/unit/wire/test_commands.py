"""CommandVerifier: every rejection reason, and the order the checks run in (DESIGN §5)."""

from __future__ import annotations

from dataclasses import dataclass, field

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import CommandRejectedError, SignatureError, WireError
from agent.wire import codec, cose
from agent.wire.commands import REASONS, CommandVerifier

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ROGUE = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
KID = b"central"
ME = "440300000001"
NOW = 1_767_225_600


@dataclass
class MemoryReplay:
    counter: int = 0
    ids: set[bytes] = field(default_factory=set)

    def last_counter(self) -> int:
        return self.counter

    def seen(self, command_id: bytes) -> bool:
        return command_id in self.ids


def _cmd(**kw: object) -> codec.Command:
    base: dict[str, object] = {
        "id": b"\x01" * 16,
        "terminal": ME,
        "counter": 10,
        "issued": NOW - 10,
        "expires": NOW + 600,
        "body": codec.Ping(),
    }
    base.update(kw)
    return codec.Command(**base)  # type: ignore[arg-type]


def _verifier(replay: MemoryReplay | None = None, now: float = NOW) -> CommandVerifier:
    return CommandVerifier({KID: KEY.public_key()}, ME, lambda: now, replay or MemoryReplay())


def _reason(data: bytes, verifier: CommandVerifier | None = None) -> str:
    with pytest.raises(CommandRejectedError) as info:
        (verifier or _verifier()).verify(data)
    assert info.value.reason in REASONS
    assert isinstance(info.value, SignatureError)
    assert isinstance(info.value, WireError)
    return info.value.reason


def _signed(cmd: codec.Command, key: Ed25519PrivateKey = KEY, kid: bytes | None = KID) -> bytes:
    return cose.sign(cmd.to_cbor(), key, kid)


def test_accepts_a_good_command_for_me_and_for_all() -> None:
    assert _verifier().verify(_signed(_cmd())) == _cmd()
    broadcast = _cmd(terminal="all", body=codec.BlacklistDelta(1, 2, (bytes(16),)))
    assert _verifier().verify(_signed(broadcast)).body == broadcast.body


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_cmd().to_cbor(), "unsigned"),  # a bare command, no COSE at all
        (cbor2.dumps([b"\xa1\x01\x27", {}, _cmd().to_cbor(), bytes(64)]), "unsigned"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01\x27", {}, _cmd().to_cbor(), b""])), "unsigned"),
        (_signed(_cmd(), ROGUE), "bad_signature"),
        (_signed(_cmd(), ROGUE, None), "bad_signature"),
        (_signed(_cmd(), KEY, b"other-kid"), "bad_signature"),
        (cose.sign(b"\xa1\x61x\x01", KEY, KID), "malformed"),
        (cose.sign(b"\xff\xff", KEY, KID), "malformed"),
        (_signed(_cmd(terminal="440300000002")), "wrong_terminal"),
        (_signed(_cmd(issued=NOW - 7200, expires=NOW - 3600)), "expired"),
        (_signed(_cmd(issued=NOW + 3600, expires=NOW + 7200)), "expired"),
        (b"junk", "malformed"),
    ],
    ids=[
        "bare payload",
        "untagged",
        "empty signature",
        "rogue key",
        "rogue key no kid",
        "unknown kid",
        "payload not a command",
        "payload not cbor",
        "wrong terminal",
        "expired",
        "issued in the future",
        "junk",
    ],
)
def test_rejection_reasons(data: bytes, reason: str) -> None:
    assert _reason(data) == reason


def test_clock_skew_tolerance() -> None:
    cmd = _signed(_cmd(issued=NOW - 100, expires=NOW - 1))
    assert _verifier(now=NOW).verify(cmd).expires == NOW - 1  # within 300 s of skew
    assert _reason(cmd, _verifier(now=NOW + 300)) == "expired"
    early = _signed(_cmd(issued=NOW + 200, expires=NOW + 900))
    assert _verifier(now=NOW).verify(early).issued == NOW + 200


def test_replay_by_counter_and_by_id() -> None:
    replay = MemoryReplay(counter=10)
    assert _reason(_signed(_cmd(counter=10)), _verifier(replay)) == "replayed"
    assert _reason(_signed(_cmd(counter=3)), _verifier(replay)) == "replayed"
    assert _verifier(replay).verify(_signed(_cmd(counter=11))).counter == 11
    replay.ids.add(b"\x01" * 16)
    assert _reason(_signed(_cmd(counter=12)), _verifier(replay)) == "replayed"


def test_signature_is_checked_before_anything_else() -> None:
    # a forged command that is also expired, misdirected and replayed reports the forgery
    cmd = _cmd(terminal="999999999999", counter=0, issued=1, expires=2)
    assert _reason(_signed(cmd, ROGUE), _verifier(MemoryReplay(counter=5))) == "bad_signature"


def test_verifier_needs_keys() -> None:
    with pytest.raises(ValueError, match="public key"):
        CommandVerifier({}, ME, lambda: NOW, MemoryReplay())
