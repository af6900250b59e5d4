"""``ssc-agent card`` in-process: the JSON output contract, masking, store reuse, errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.sim.store import CardStore

SELECT_SSSE = "00A404000F7378312E73682EC9E7BBE1B1A3D5CF00"
KEYS = {
    "card_id_code",
    "card_number",
    "card_type",
    "spec_version",
    "issue_date",
    "expiry_date",
    "area_code",
    "algorithm",
    "state",
    "pin_tries_left",
    "holder",
    "bank",
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_json(text: str) -> dict[str, Any]:
    lines = text.splitlines()
    assert len(lines) == 1, text
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    return obj


def test_read_json_contract_and_masking(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, err = run(capsys, "card", "read", "--sim", "--json", "--state-dir", str(tmp_path))
    assert (rc, err) == (0, "")
    obj = one_json(out)
    assert set(obj) == KEYS
    card = CardStore(tmp_path).load_current()
    assert card is not None  # issued and saved on first use
    assert obj["card_id_code"] == card.card_id_code.hex().upper()
    assert obj["state"] == "active"
    assert obj["algorithm"] in ("des", "sm4")
    assert obj["holder"]["ssn"] == card.ssn[:6] + "*" * 8 + card.ssn[-4:]
    assert obj["holder"]["name"] == card.name[0] + "*" * (len(card.name) - 1)
    assert "*" in obj["bank"]["pan"]
    assert card.ssn not in out
    assert card.name not in out


def test_read_reuses_the_stored_card_and_shows_pii(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = ("card", "read", "--sim", "--json", "--state-dir", str(tmp_path))
    first = one_json(run(capsys, *args)[1])
    rc, out, _ = run(capsys, *args, "--show-pii")
    assert rc == 0
    second = one_json(out)
    assert second["card_id_code"] == first["card_id_code"]
    card = CardStore(tmp_path).load_current()
    assert card is not None
    assert second["holder"]["ssn"] == card.ssn
    assert second["holder"]["name"] == card.name
    assert second["bank"]["pan"].isdigit()


def test_read_without_json_is_one_indented_object(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc, out, _ = run(capsys, "card", "read", "--sim", "--state-dir", str(tmp_path))
    assert rc == 0
    assert set(json.loads(out)) == KEYS
    assert len(out.splitlines()) > 1


def test_apdu_decodes_and_masks(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    base = ("card", "apdu", "--sim", "--json", "--state-dir", str(tmp_path), "--t0")
    rc, out, _ = run(capsys, *base, SELECT_SSSE, "00A4020002EF05", "00B2070400", "00B2990400")
    assert rc == 0
    ex = one_json(out)["exchanges"]
    assert [e["sw"] for e in ex] == ["9000", "9000", "9000", "6A83"]
    assert ex[0]["tlv"][0]["tag"] == "6F"
    assert ex[0]["data"].startswith("6F")
    assert ex[2]["data"] is None  # record data hidden by default
    assert ex[2]["masked"] is True
    assert ex[2]["tlv"] == [{"tag": "07", "length": 9, "value": None}]
    assert ex[3]["meaning"] == "6A83 record not found"
    rc, out, _ = run(capsys, *base, "--show-pii", SELECT_SSSE, "00A4020002EF05", "00B2070400")
    card = CardStore(tmp_path).load_current()
    assert card is not None
    shown = one_json(out)["exchanges"][2]
    assert bytes.fromhex(shown["data"])[2:].rstrip(b"\0").decode() == card.card_number


def test_apdu_raw_shows_61xx(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, _ = run(
        capsys, "card", "apdu", "--sim", "--json", "--state-dir", str(tmp_path), SELECT_SSSE
    )
    assert rc == 0
    (ex,) = one_json(out)["exchanges"]
    assert ex["sw"].startswith("61")
    assert "GET RESPONSE" in ex["meaning"]


def test_apdu_changes_persist(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A wrong PIN sent as a raw APDU costs a try that the next read sees."""
    base = ("card", "apdu", "--sim", "--json", "--state-dir", str(tmp_path), "--t0")
    rc, out, _ = run(capsys, *base, SELECT_SSSE, "0020000003000000")
    assert rc == 0
    assert one_json(out)["exchanges"][1]["sw"] == "63C5"
    rc, out, _ = run(capsys, "card", "read", "--sim", "--json", "--state-dir", str(tmp_path))
    assert one_json(out)["pin_tries_left"] == 5


@pytest.mark.parametrize("bad", ["zz", "00A4", "00B2010405FF"])
def test_apdu_bad_hex(capsys: pytest.CaptureFixture[str], tmp_path: Path, bad: str) -> None:
    rc, out, err = run(capsys, "card", "apdu", "--sim", "--json", "--state-dir", str(tmp_path), bad)
    assert rc == 2
    error = one_json(out)["error"]
    assert set(error) == {"code", "message"}
    assert error["code"] in ("local_protocol_error", "card_protocol_error")
    rc, out, err = run(capsys, "card", "apdu", "--sim", "--state-dir", str(tmp_path), bad)
    assert rc == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1


def test_broken_store_is_a_clean_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run(capsys, "card", "read", "--sim", "--json", "--state-dir", str(tmp_path))
    store = CardStore(tmp_path)
    key = store.current_key()
    assert key is not None
    store.path(key).write_text("{not json", encoding="utf-8")
    rc, out, _ = run(capsys, "card", "read", "--sim", "--json", "--state-dir", str(tmp_path))
    assert rc == 1
    assert one_json(out)["error"]["code"] == "sim_state"
    rc, out, err = run(capsys, "card", "read", "--sim", "--state-dir", str(tmp_path))
    assert (rc, out) == (1, "")
    assert err.startswith("ssc-agent: sim_state:")
    assert len(err.strip().splitlines()) == 1


def test_locked_card_reads_with_exit_0(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run(capsys, "card", "read", "--sim", "--json", "--state-dir", str(tmp_path))
    store = CardStore(tmp_path)
    card = store.load_current()
    assert card is not None
    state = card.to_state()
    state["perm_locked"] = True
    store.save(type(card).from_state(card.profile, state))
    rc, out, _ = run(capsys, "card", "read", "--sim", "--json", "--state-dir", str(tmp_path))
    assert rc == 0
    obj = one_json(out)
    assert (obj["state"], obj["card_id_code"], obj["holder"]) == ("perm_locked", None, None)


def test_pcsc_absent_is_a_config_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "agent.drivers.pcsc" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    rc, out, _ = run(capsys, "card", "read", "--reader", "Virtual*", "--json")
    assert rc == 1
    error = one_json(out)["error"]
    assert error["code"] == "config_error"
    assert "pcsc not available" in error["message"]


def test_sim_with_psam_glob_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, _ = run(
        capsys, "card", "read", "--sim", "--psam", "x*", "--json", "--state-dir", str(tmp_path)
    )
    assert rc == 1
    assert one_json(out)["error"]["code"] == "config_error"


def test_unknown_profile(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, _ = run(
        capsys, "card", "read", "--sim", "--json", "--state-dir", str(tmp_path), "--profile", "nope"
    )
    assert rc == 1
    assert one_json(out)["error"]["code"] == "config_error"


def test_sim_or_reader_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["card", "read", "--json"])
    assert info.value.code == 2
    capsys.readouterr()
