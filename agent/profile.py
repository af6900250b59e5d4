"""Card profiles: what the public record does not settle, kept as data (DESIGN §3).

A profile (built in as ``agent/profiles/<name>.toml``, or any file by path) says, for one city's
cards and PSAMs: which PSAM key (usage byte, index) serves each purpose, which diversification
factors derive the card key, when reading EF06 needs external authentication, what the
card-side activation step is, and (only in profiles for the simulators, clearly marked) the
test master keys.

Key purposes (ssc-card-protocol.md §2–3, §6):

* ``stk``    application maintenance: block 84 1E, unblock 84 18, card block 84 16, update 04 DC;
* ``rkssse`` external authentication before reading EF06 on 3.0 cards (00 82);
* ``rpk``    PIN reload/reset (80 5E 00 00);
* ``puk``    PIN unblock (84 24);
* ``seal``   the terminal's MAC over sealed journal records (not a card key).

Factor names (each yields 8 bytes):

* ``serial``   last 8 bytes of the card identification code (chip serial);
* ``area``     3-byte area code of the card identification code, right-padded with 00;
* ``terminal`` the PSAM terminal number (6 bytes BCD), right-padded with 00.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import ConfigError

PURPOSES = ("stk", "rkssse", "rpk", "puk", "seal")
FACTORS = ("serial", "area", "terminal")
ACTIVATION_STEPS = ("none", "update_record")
#: The built-in profiles, shipped in the package (``default``: the simulators' test profile).
PROFILE_DIR = Path(__file__).resolve().parent / "profiles"


@dataclass(frozen=True, slots=True)
class KeyRef:
    """One PSAM key: ``80 1A <usage> <index>`` plus the factor names for its diversification."""

    usage: int
    index: int
    factors: tuple[str, ...]
    ext_auth_key_id: int = 0  # P2 of EXTERNAL AUTHENTICATE for rkssse (card key identifier)

    @property
    def levels(self) -> int:
        return len(self.factors)


@dataclass(frozen=True, slots=True)
class Activation:
    """Card-side step of social-security activation (启用); ``none`` when central-only."""

    step: str = "update_record"
    record_tag: int = 0x0F  # status record in EF05 written with 04 DC (MAC'd, stk)
    active_value: bytes = b"\x01"
    inactive_value: bytes = b"\x00"
    require_pin_change: bool = True


@dataclass(frozen=True, slots=True)
class CardProfile:
    """A validated card profile. Build with ``load_profile`` or ``parse_profile``."""

    name: str
    description: str
    psam_aid: bytes
    keys: dict[str, KeyRef]
    ext_auth_spec_versions: tuple[str, ...] = ("3",)  # spec-version prefixes needing RKSSSE
    lock_p2_temporary: int = 0x00
    lock_p2_permanent: int = 0x01
    initial_pin: str = "123456"
    pin_max_tries: int = 6
    activation: Activation = field(default_factory=Activation)
    # Simulator-only master keys: {"des": {"stk": b"...", ...}, "sm4": {...}}. Never in production.
    test_master_keys: dict[str, dict[str, bytes]] = field(default_factory=dict)

    def key(self, purpose: str) -> KeyRef:
        try:
            return self.keys[purpose]
        except KeyError:
            raise ConfigError(f"profile {self.name!r} has no key for purpose {purpose!r}") from None

    def needs_external_auth(self, spec_version: str) -> bool:
        return any(spec_version.startswith(p) for p in self.ext_auth_spec_versions)

    def master_key(self, algorithm: str, purpose: str) -> bytes:
        """Test master key (simulators and the reference central only)."""
        try:
            return self.test_master_keys[algorithm][purpose]
        except KeyError:
            raise ConfigError(
                f"profile {self.name!r} has no test master key {algorithm}.{purpose}"
            ) from None


def card_factors(names: tuple[str, ...], card_id_code: bytes, terminal: bytes = b"") -> list[bytes]:
    """Resolve factor names to 8-byte values for one card (and terminal)."""
    out = []
    for n in names:
        if n == "serial":
            if len(card_id_code) != 16:
                raise ConfigError("card identification code must be 16 bytes")
            out.append(card_id_code[8:16])
        elif n == "area":
            out.append(card_id_code[:3] + bytes(5))
        elif n == "terminal":
            if len(terminal) != 6:
                raise ConfigError("terminal number must be 6 bytes BCD")
            out.append(terminal + bytes(2))
        else:
            raise ConfigError(f"unknown diversification factor {n!r}")
    return out


def _hex(value: Any, where: str, length: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ConfigError(f"{where}: not valid hex") from None
    if length is not None and len(raw) != length:
        raise ConfigError(f"{where}: expected {length} bytes, got {len(raw)}")
    return raw


def _int(value: Any, where: str, lo: int = 0, hi: int = 0xFF) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{where}: expected an integer {lo}..{hi}")
    return value


def parse_profile(data: dict[str, Any], source: str = "<profile>") -> CardProfile:
    """Validate a profile mapping; every error names its key."""
    try:
        name = data["name"]
        keys_raw = data["keys"]
    except KeyError as e:
        raise ConfigError(f"{source}: missing key {e.args[0]!r}") from None
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: name: expected a non-empty string")
    if not isinstance(keys_raw, dict):
        raise ConfigError(f"{source}: keys: expected a table")
    keys: dict[str, KeyRef] = {}
    for purpose, k in keys_raw.items():
        where = f"{source}: keys.{purpose}"
        if purpose not in PURPOSES:
            raise ConfigError(f"{where}: unknown purpose (known: {', '.join(PURPOSES)})")
        if not isinstance(k, dict):
            raise ConfigError(f"{where}: expected a table")
        factors = k.get("factors", [])
        if not isinstance(factors, list) or any(f not in FACTORS for f in factors):
            raise ConfigError(f"{where}.factors: expected a list of {', '.join(FACTORS)}")
        if len(factors) > 3:
            raise ConfigError(f"{where}.factors: at most 3 diversification levels")
        usage = _int(k.get("usage"), f"{where}.usage")
        if usage >> 5 != len(factors):
            raise ConfigError(
                f"{where}.usage: bits 8-6 give {usage >> 5} levels but {len(factors)} factors"
            )
        keys[purpose] = KeyRef(
            usage=usage,
            index=_int(k.get("index"), f"{where}.index"),
            factors=tuple(factors),
            ext_auth_key_id=_int(k.get("ext_auth_key_id", 0), f"{where}.ext_auth_key_id"),
        )
    act_raw = data.get("activation", {})
    if not isinstance(act_raw, dict):
        raise ConfigError(f"{source}: activation: expected a table")
    step = act_raw.get("step", "update_record")
    if step not in ACTIVATION_STEPS:
        raise ConfigError(f"{source}: activation.step: one of {', '.join(ACTIVATION_STEPS)}")
    activation = Activation(
        step=step,
        record_tag=_int(act_raw.get("record_tag", 0x0F), f"{source}: activation.record_tag"),
        active_value=_hex(act_raw.get("active_value", "01"), f"{source}: activation.active_value"),
        inactive_value=_hex(
            act_raw.get("inactive_value", "00"), f"{source}: activation.inactive_value"
        ),
        require_pin_change=bool(act_raw.get("require_pin_change", True)),
    )
    tmk: dict[str, dict[str, bytes]] = {}
    for alg, table in data.get("test_master_keys", {}).items():
        if alg not in ("des", "sm4") or not isinstance(table, dict):
            raise ConfigError(f"{source}: test_master_keys.{alg}: expected des or sm4 table")
        tmk[alg] = {
            p: _hex(v, f"{source}: test_master_keys.{alg}.{p}", 16) for p, v in table.items()
        }
    pin = str(data.get("initial_pin", "123456"))
    if not pin.isdigit() or not 4 <= len(pin) <= 12:
        raise ConfigError(f"{source}: initial_pin: 4 to 12 digits")
    versions = data.get("ext_auth_spec_versions", ["3"])
    if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
        raise ConfigError(f"{source}: ext_auth_spec_versions: expected a list of strings")
    return CardProfile(
        name=name,
        description=str(data.get("description", "")),
        psam_aid=_hex(data.get("psam_aid", ""), f"{source}: psam_aid"),
        keys=keys,
        ext_auth_spec_versions=tuple(versions),
        lock_p2_temporary=_int(data.get("lock_p2_temporary", 0), f"{source}: lock_p2_temporary"),
        lock_p2_permanent=_int(data.get("lock_p2_permanent", 1), f"{source}: lock_p2_permanent"),
        initial_pin=pin,
        pin_max_tries=_int(data.get("pin_max_tries", 6), f"{source}: pin_max_tries", 1, 15),
        activation=activation,
        test_master_keys=tmk,
    )


def load_profile(name_or_path: str | Path) -> CardProfile:
    """Load the built-in ``agent/profiles/<name>.toml``, or a profile file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"card profile not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    return parse_profile(data, str(path))
