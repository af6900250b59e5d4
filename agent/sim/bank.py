"""Simulated bank host (issuer) for the PBOC/UnionPay application. TEST KEYS ONLY.

The real bank host is the only party that can MAC issuer scripts (ssc-card-protocol.md §4, "The
agent cannot compute these MACs"). This simulator plays it for tests, the demo and integrators:
given the online request data (PAN, PSN, ATC, the card's cryptogram and the data it covers) it
verifies the cryptogram with the same issuer master keys as ``agent.sim.pboc.PbocApplet`` and
answers with issuer scripts ``72{9F18 id, 86 command}``:

* ``activate``: ``84 18 00 00 04 MAC`` (application unblock: the bank account is activated);
* ``block``: ``84 1E 00 00 04 MAC`` (application block);
* ``card_block``: ``84 16 00 00 04 MAC``;
* ``pin_unblock``: ``84 24 00 00 04 MAC`` (PIN try counter restored).

Script MAC (§4): PBOC session key from the MAC UDK and the ATC, over
``CLA INS P1 P2 Lc ‖ ATC ‖ cryptogram ‖ data``, ISO 9797-1 alg. 3, IV 0, leftmost 4 bytes.
A cryptogram that does not verify is declined (response code ``05``) with no script.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from agent.card import tlv
from agent.errors import CardProtocolError, ConfigError, LocalProtocolError
from agent.sim.pboc import (
    application_cryptogram,
    cvr_from_iad,
    derive_udk,
    script_mac,
    session_key,
)

#: action → (CLA, INS, P1, P2) of the script command.
ACTIONS: dict[str, tuple[int, int, int, int]] = {
    "activate": (0x84, 0x18, 0x00, 0x00),
    "block": (0x84, 0x1E, 0x00, 0x00),
    "card_block": (0x84, 0x16, 0x00, 0x00),
    "pin_unblock": (0x84, 0x24, 0x00, 0x00),
}


@dataclass(frozen=True, slots=True)
class ArqcRequest:
    """What the terminal sends the bank host online (the ICC part of ISO 8583 field 55)."""

    pan: str
    psn: int
    atc: int
    cryptogram: bytes  # 9F26
    transaction_data: bytes  # CDOL1 data as sent in GENERATE AC
    aip: bytes  # 82 from GPO; 0000 when GPO was refused (blocked application)
    iad: bytes  # 9F10


@dataclass(frozen=True, slots=True)
class BankResponse:
    approved: bool
    response_code: bytes  # 8A: b"00" approved, b"05" do not honour
    scripts: bytes  # concatenated 71/72 templates, relayed unchanged to the card
    reason: str = ""


class BankHostSim:
    """Issuer host with test master keys (AC key and script MAC key)."""

    def __init__(self, issuer_master_key: bytes, mac_master_key: bytes | None = None) -> None:
        if len(issuer_master_key) != 16 or (
            mac_master_key is not None and len(mac_master_key) != 16
        ):
            raise ConfigError("issuer master keys must be 16 bytes")
        self.issuer_master_key = bytes(issuer_master_key)
        self.mac_master_key = bytes(mac_master_key or issuer_master_key)
        self._next_script_id = 1

    def verify_arqc(self, req: ArqcRequest) -> bool:
        """Recompute the card's cryptogram; False for any mismatch or malformed field."""
        if len(req.cryptogram) != 8 or len(req.aip) != 2 or not 0 <= req.atc <= 0xFFFF:
            return False
        try:
            cvr = cvr_from_iad(req.iad)
        except CardProtocolError:
            return False
        sk = session_key(derive_udk(self.issuer_master_key, req.pan, req.psn), req.atc)
        expected = application_cryptogram(sk, req.transaction_data, req.aip, req.atc, cvr)
        return hmac.compare_digest(expected, req.cryptogram)

    def script_command(self, req: ArqcRequest, action: str, data: bytes = b"") -> bytes:
        """One MAC'd script command ``CLA INS P1 P2 Lc data MAC4``."""
        try:
            cla, ins, p1, p2 = ACTIONS[action]
        except KeyError:
            raise LocalProtocolError(f"unknown issuer script action {action!r}") from None
        header = bytes((cla, ins, p1, p2, len(data) + 4))
        sk = session_key(derive_udk(self.mac_master_key, req.pan, req.psn), req.atc)
        return header + data + script_mac(sk, header, req.atc, req.cryptogram, data)

    def issuer_script(
        self,
        req: ArqcRequest,
        actions: Sequence[str],
        *,
        template: int = 0x72,
        script_id: bytes | None = None,
    ) -> bytes:
        """One script template ``72{9F18 id, 86 cmd …}`` (or 71) for ``actions`` in order."""
        if template not in (0x71, 0x72):
            raise LocalProtocolError("issuer script template must be 71 or 72")
        if script_id is None:
            script_id = self._next_script_id.to_bytes(4, "big")
            self._next_script_id += 1
        body = tlv.encode(0x9F18, script_id) + b"".join(
            tlv.encode(0x86, self.script_command(req, a)) for a in actions
        )
        return tlv.encode(template, body)

    def authorize(self, req: ArqcRequest, action: str | None = None) -> BankResponse:
        """Verify the cryptogram, then answer with the script for ``action`` (if any)."""
        if not self.verify_arqc(req):
            return BankResponse(False, b"05", b"", "cryptogram does not verify")
        scripts = self.issuer_script(req, [action]) if action is not None else b""
        return BankResponse(True, b"00", scripts)
