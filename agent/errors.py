"""One exception root for the whole agent, split by layer, by blame and by retryability.

DESIGN §2 and model-codebases principle 9: ``AgentError`` is the root. Each layer has its own
branch; within a branch, ``Remote*`` means the peer (card, PSAM, broker, client) broke the rules,
``Local*`` means we did. ``retryable`` says whether the same call may succeed later unchanged.
Every error has a stable machine ``code`` (used in API error objects, CLI JSON, events) and a
human message that never contains personal data.
"""

from __future__ import annotations

from typing import ClassVar


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""

    code: ClassVar[str] = "agent_error"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.__class__.__name__)
        self.message = message or (self.__class__.__doc__ or self.__class__.__name__).strip()
        if code is not None:
            self.code = code  # type: ignore[misc]  # per-instance refinement of the class code

    def to_dict(self) -> dict[str, str]:
        """The ``{"code", "message"}`` object used by the API, the CLI and events."""
        return {"code": self.code, "message": self.message}


# ---------------------------------------------------------------------------------------------
# Protocol errors: bytes that do not follow the rules of their layer (sans-IO codecs raise these)
# ---------------------------------------------------------------------------------------------
class ProtocolError(AgentError):
    """Bytes that break the rules of their protocol layer."""

    code = "protocol_error"


class RemoteProtocolError(ProtocolError):
    """The peer (card, PSAM, printer, broker, API client) sent something malformed."""

    code = "remote_protocol_error"


class LocalProtocolError(ProtocolError):
    """We were asked to encode something the protocol cannot express (a bug or a bad argument)."""

    code = "local_protocol_error"


# card layer (ISO 7816): APDU, status words, TLV, ATR, T=0
class CardProtocolError(RemoteProtocolError):
    """A card or PSAM answered with malformed bytes (APDU, TLV, ATR, record)."""

    code = "card_protocol_error"


class PrinterProtocolError(RemoteProtocolError):
    """The receipt printer answered a status query with a byte that breaks its fixed bits."""

    code = "printer_protocol_error"


class ApduEncodingError(LocalProtocolError):
    """A command APDU could not be encoded (field out of range)."""

    code = "apdu_encoding_error"


class TlvError(CardProtocolError):
    """Malformed BER-TLV data."""

    code = "tlv_error"


class AtrError(CardProtocolError):
    """Malformed answer-to-reset."""

    code = "atr_error"


class IssuerScriptError(RemoteProtocolError):
    """The bank host sent a malformed issuer script (templates 71/72, commands 86)."""

    code = "issuer_script_error"


class CardStatusError(AgentError):
    """The card answered a well-formed status word that is not success for this command.

    The status word is data on the response; this is raised only by ``check()`` or
    ``expect_sw=`` at the call site (model-codebases principle 9).
    """

    code = "card_status"

    def __init__(self, sw: int, message: str = "", *, command: str = "") -> None:
        self.sw = sw
        self.command = command
        text = message or f"card answered SW {sw:04X}"
        if command:
            text = f"{command}: {text}"
        super().__init__(text)


class SecurityStatusError(CardStatusError):
    """Security status not satisfied, wrong MAC or authentication failed (69xx, 63Cx, 9302)."""

    code = "card_security"


class PinError(CardStatusError):
    """A PIN check failed; ``tries_left`` is from 63Cx, 0 when blocked (6983)."""

    code = "pin_wrong"

    def __init__(self, sw: int, tries_left: int, message: str = "", *, command: str = "") -> None:
        self.tries_left = tries_left
        super().__init__(sw, message or f"PIN rejected, {tries_left} tries left", command=command)


class PinBlockedError(PinError):
    """The PIN is blocked (6983): no tries left."""

    code = "pin_blocked"

    def __init__(self, sw: int = 0x6983, message: str = "", *, command: str = "") -> None:
        super().__init__(sw, 0, message or "PIN blocked", command=command)


class ApplicationLockedError(CardStatusError):
    """The application is locked: 6283 temporarily, 9303 permanently, 6A81 card blocked."""

    code = "card_locked"


class FileNotFoundOnCardError(CardStatusError):
    """File, application or record not found (6A82, 6A83)."""

    code = "card_not_found"


# ---------------------------------------------------------------------------------------------
# Device / transport errors: drivers translate every foreign exception into one of these
# ---------------------------------------------------------------------------------------------
class DeviceError(AgentError):
    """A device (reader, card, PSAM, printer) failed."""

    code = "device_error"


class TransientDeviceError(DeviceError):
    """A device fault that may clear by itself (service restarting, reader replugged)."""

    code = "device_transient"
    retryable = True


class CardRemovedError(DeviceError):
    """The card left the reader (or lost power) during an exchange."""

    code = "card_removed"


class NoCardError(DeviceError):
    """No card is present in the reader."""

    code = "no_card"
    retryable = True


class ReaderUnavailableError(TransientDeviceError):
    """The reader is gone or not found."""

    code = "reader_unavailable"


class PcscServiceError(TransientDeviceError):
    """The PC/SC service (pcscd) is not reachable."""

    code = "pcsc_unavailable"


class ReaderBusyError(TransientDeviceError):
    """Another application holds the card exclusively (PC/SC sharing violation)."""

    code = "reader_busy"


class DeviceTimeoutError(TransientDeviceError):
    """A device did not answer in time."""

    code = "device_timeout"


class OperatorActionError(DeviceError):
    """An action only a person at the terminal can take (HIL prompt: insert a card, open the
    printer cover) cannot be asked for (``--non-interactive``) or was not taken in time."""

    code = "operator_action"


class PrinterError(DeviceError):
    """The receipt printer failed."""

    code = "printer_error"


# ---------------------------------------------------------------------------------------------
# Security module (PSAM or remote HSM)
# ---------------------------------------------------------------------------------------------
class SecurityModuleError(AgentError):
    """The security module could not produce a MAC or key (missing key, wrong algorithm)."""

    code = "security_module"


class PsamStatusError(SecurityModuleError):
    """The PSAM refused a command with a status word (no key delivered, bad length, ...)."""

    code = "psam_status"

    def __init__(self, sw: int, message: str = "", *, command: str = "") -> None:
        self.sw = sw
        self.command = command
        text = f"{message} (SW {sw:04X})" if message else f"PSAM answered SW {sw:04X}"
        super().__init__(f"{command}: {text}" if command else text)


class PsamKeyNotFoundError(PsamStatusError):
    """The PSAM has no key for this usage and index (6A88, 9403)."""

    code = "psam_key_not_found"


# ---------------------------------------------------------------------------------------------
# Configuration and profiles
# ---------------------------------------------------------------------------------------------
class ConfigError(AgentError):
    """Configuration or card profile is invalid; message names the key (and line, if known)."""

    code = "config_error"


# ---------------------------------------------------------------------------------------------
# Journal (durable store)
# ---------------------------------------------------------------------------------------------
class JournalError(AgentError):
    """The journal could not complete an operation."""

    code = "journal_error"


class JournalFullError(JournalError):
    """The disk is full: new work is refused, committed records are intact."""

    code = "journal_full"
    retryable = True


class JournalCorruptError(JournalError):
    """The journal file failed its integrity check."""

    code = "journal_corrupt"


class ChainError(JournalError):
    """The sealed-record hash chain or a record MAC does not verify."""

    code = "chain_broken"


class RecordFormatError(JournalError):
    """A sealed record body does not have the fixed field set or a field has the wrong type."""

    code = "bad_record"


class DuplicateIntentError(JournalError):
    """A transaction with this tx id or idempotency key is already journaled."""

    code = "duplicate_intent"


class BlacklistVersionError(JournalError):
    """A blacklist delta does not start at the local version: a full snapshot is needed."""

    code = "blacklist_version"


class SealConflictError(JournalError):
    """Another seal took the sequence number prepared for this one; prepare again."""

    code = "seal_conflict"
    retryable = True


# ---------------------------------------------------------------------------------------------
# Transactions and policy
# ---------------------------------------------------------------------------------------------
class TransactionError(AgentError):
    """A card transaction could not be completed."""

    code = "tx_error"


class InvalidTransitionError(TransactionError):
    """A state machine was asked for a transition its table does not allow."""

    code = "invalid_transition"


class PolicyRefusal(TransactionError):
    """Refused by policy; ``code`` and ``message`` are fit to show a citizen at a kiosk."""

    code = "refused"


class NotATestCardError(PolicyRefusal):
    """The HIL suite refuses to write a card that is not on its allow-list of test cards
    (DESIGN §9); raised before any card-changing command is sent."""

    code = "not_a_test_card"


class CardRefusedError(TransactionError):
    """The card refused the operation; its record is journaled (and sealed) as failed.

    ``code`` is the card error's code (``pin_wrong``, ``card_security``...); ``record`` is the
    journaled transaction record (set by the engine; ``None`` if it could not be read back).
    """

    code = "card_refused"

    def __init__(self, message: str = "", *, code: str | None = None, record: object = None):
        super().__init__(message, code=code)
        self.record = record


class TransactionInDoubtError(TransactionError):
    """The card left or failed after the write was sent: the outcome is unknown until the card
    is seen again (the record is ``in_doubt``; ``record`` holds it)."""

    code = "tx_in_doubt"

    def __init__(self, message: str = "", *, code: str | None = None, record: object = None):
        super().__init__(message, code=code)
        self.record = record


# ---------------------------------------------------------------------------------------------
# Wire (CBOR messages, COSE) and uplink (MQTT)
# ---------------------------------------------------------------------------------------------
class WireError(RemoteProtocolError):
    """A CBOR message, frame or COSE object is malformed or fails schema validation."""

    code = "wire_error"


class FrameTooLargeError(WireError):
    """A length-prefixed frame exceeds the configured maximum."""

    code = "frame_too_large"


class SignatureError(WireError):
    """A signed command is unsigned, badly signed, replayed or expired."""

    code = "bad_signature"


class CommandRejectedError(SignatureError):
    """A command from central was refused; ``reason`` is the code reported in the event.

    Reasons: unsigned, bad_signature, replayed, expired, wrong_terminal, malformed.
    """

    code = "command_rejected"

    def __init__(self, reason: str, message: str = "") -> None:
        self.reason = reason
        super().__init__(message or f"command rejected: {reason}")


class MessageEncodingError(LocalProtocolError):
    """A message could not be built: a field is missing, of the wrong type or out of range."""

    code = "message_encoding"


class UplinkError(AgentError):
    """The uplink (MQTT) failed."""

    code = "uplink_error"
    retryable = True


class UplinkUnavailableError(UplinkError):
    """Central is not reachable now."""

    code = "uplink_unavailable"


class AuthorizationTimeoutError(UplinkUnavailableError):
    """Central was asked online for an authorization and did not answer in time."""

    code = "authorization_timeout"


# ---------------------------------------------------------------------------------------------
# Simulators (agent/sim): persisted device state
# ---------------------------------------------------------------------------------------------
class SimStateError(AgentError):
    """A simulated device's saved state is missing, malformed or could not be written."""

    code = "sim_state"


# ---------------------------------------------------------------------------------------------
# Local API
# ---------------------------------------------------------------------------------------------
class ApiError(AgentError):
    """An API request could not be served."""

    code = "api_error"


__all__ = [
    name for name, obj in globals().items() if isinstance(obj, type) and issubclass(obj, AgentError)
]
