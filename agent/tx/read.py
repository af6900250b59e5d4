"""The combined card read: SSSE identity, holder, lifecycle, PIN tries, and the bank application.

This is what a kiosk shows when a card is inserted and what ``ssc-agent card read`` prints.
``CardReport.to_json`` is the output contract (the issue's JSON object); personal data — SSN,
name, PAN — is masked unless the operator asked for it (DESIGN §4, ``--show-pii``).

A card whose SSSE application is locked serves nothing but SELECT and the lifecycle commands
(CARD-PROTOCOL §1 "Lifecycle"): its report carries the state and the algorithm and leaves the
identity and holder fields null. A 3.0 card without a security module to authenticate with
reports its identity and no holder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.emv.app import UNIONPAY_RID, find_applications, read_bank_app
from agent.privacy import mask_name, mask_pan, mask_ssn
from agent.ssc.app import CardState, SscApplication

if TYPE_CHECKING:
    from agent.card.apdu import CardChannel
    from agent.emv.app import BankAppInfo
    from agent.profile import CardProfile
    from agent.psam.crypto import Algorithm
    from agent.psam.module import SecurityModule
    from agent.ssc.files import CardIdentity, Holder


@dataclass(frozen=True, slots=True)
class CardReport:
    """Everything one read of a card yields."""

    state: CardState
    algorithm: Algorithm | None
    pin_tries_left: int | None
    identity: CardIdentity | None
    holder: Holder | None
    bank: BankAppInfo | None

    def to_json(self, show_pii: bool = False) -> dict[str, Any]:
        """The JSON object of ``ssc-agent card read`` (dates ISO, ids upper-case hex)."""
        ident = self.identity
        return {
            "card_id_code": ident.card_id.hex if ident else None,
            "card_number": ident.card_number if ident else None,
            "card_type": ident.card_type if ident else None,
            "spec_version": ident.spec_version if ident else None,
            "issue_date": ident.issue_date.isoformat() if ident else None,
            "expiry_date": ident.expiry_date.isoformat() if ident else None,
            "area_code": ident.area_code if ident else None,
            "algorithm": self.algorithm.value if self.algorithm else None,
            "state": self.state.value,
            "pin_tries_left": self.pin_tries_left,
            "holder": _holder_json(self.holder, show_pii),
            "bank": _bank_json(self.bank, show_pii),
        }


def _holder_json(holder: Holder | None, show_pii: bool) -> dict[str, Any] | None:
    if holder is None:
        return None
    return {
        "ssn": holder.ssn if show_pii else mask_ssn(holder.ssn),
        "name": holder.name if show_pii else mask_name(holder.name),
        "gender": holder.gender.label,
        "birth_date": holder.birth_date.isoformat(),
    }


def _bank_json(bank: BankAppInfo | None, show_pii: bool) -> dict[str, Any] | None:
    if bank is None:
        return None
    return {
        "pan": bank.pan if show_pii else mask_pan(bank.pan),
        "expiry": bank.expiry.isoformat() if bank.expiry else None,
    }


async def read_card(
    channel: CardChannel, profile: CardProfile, sam: SecurityModule | None = None
) -> CardReport:
    """Read the SSSE application, then the bank application (None when the card has none).

    Errors propagate: ``CardRemovedError`` if the card leaves, ``CardProtocolError`` for a
    malformed answer, the typed ``CardStatusError`` family for a refusal that makes the read
    meaningless (e.g. not a social security card: 6A82).
    """
    app = SscApplication(channel, profile, sam)
    selection = await app.select()
    identity: CardIdentity | None = None
    holder: Holder | None = None
    if selection.lock is None:
        identity = await app.read_identity()
        if sam is not None or not profile.needs_external_auth(identity.spec_version):
            holder = await app.read_holder()
    status = await app.state()
    bank = None if status.state is CardState.CARD_BLOCKED else await _read_bank(channel)
    return CardReport(
        state=status.state,
        algorithm=app.selection.algorithm if app.selection else selection.algorithm,
        pin_tries_left=status.pin_tries_left,
        identity=identity,
        holder=holder,
        bank=bank,
    )


async def _read_bank(channel: CardChannel) -> BankAppInfo | None:
    """The UnionPay application if the card has one (PSE, PPSE, then direct selection)."""
    entries = await find_applications(channel)
    if not entries:
        return None
    aid = next((e.aid for e in entries if e.aid.startswith(UNIONPAY_RID)), entries[0].aid)
    return await read_bank_app(channel, aid=aid)
