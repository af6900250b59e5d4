"""Config loading: every error reported with its key and line; env overrides; URLs."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import AgentConfig, ConfigErrors, TransportUrl, load_config, parse_config
from agent.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[3] / "config"


def test_defaults_are_valid() -> None:
    cfg = parse_config("", env={})
    assert cfg == AgentConfig()
    assert cfg.reader_url.scheme == "sim"


def test_every_error_has_key_and_line() -> None:
    text = """
[card]
reader = "usb://x"
apdu_timeout_s = "slow"

[uplink]
inflight_window = 0
bogus = 1

[nosuch]
x = 1
"""
    with pytest.raises(ConfigErrors) as ei:
        parse_config(text, env={})
    issues = {i.key: i.line for i in ei.value.issues}
    assert issues == {
        "card.reader": 3,
        "card.apdu_timeout_s": 4,
        "uplink.inflight_window": 7,
        "uplink.bogus": 8,
        "nosuch": 10,
    }
    assert isinstance(ei.value, ConfigError)


def test_toml_syntax_error_is_a_config_error() -> None:
    with pytest.raises(ConfigErrors) as ei:
        parse_config("[card\nreader=", env={})
    assert ei.value.issues[0].key == "<file>"


def test_env_overrides_win() -> None:
    cfg = parse_config(
        '[uplink]\nbroker = "mqtt://a:1883"\n',
        env={"SSC_AGENT__UPLINK__BROKER": "mqtt://b:1884", "SSC_AGENT__API__MAX_FRAME": "4096"},
    )
    assert cfg.broker_url.host == "b"
    assert cfg.broker_url.port == 1884
    assert cfg.api.max_frame == 4096


def test_cross_checks() -> None:
    with pytest.raises(ConfigErrors, match="token_file"):
        parse_config('[api]\ntcp = "127.0.0.1:7010"\n', env={})
    with pytest.raises(ConfigErrors, match="client certificate"):
        parse_config('[uplink]\nbroker = "mqtts://central:8883"\n', env={})


def test_tcp_must_be_loopback() -> None:
    with pytest.raises(ConfigErrors, match="loopback"):
        parse_config('[api]\ntcp = "0.0.0.0:7010"\ntoken_file = "t"\n', env={})


def test_transport_urls() -> None:
    u = TransportUrl.parse("pcsc://Virtual PCD 00 0*", ("pcsc",))
    assert u.target == "Virtual PCD 00 0*"
    s = TransportUrl.parse("serial:///dev/ttyUSB0?baud=9600", ("serial",))
    assert (s.target, s.params) == ("/dev/ttyUSB0", {"baud": "9600"})
    m = TransportUrl.parse("mqtts://central.example", ("mqtts",))
    assert m.port == 8883
    with pytest.raises(ValueError, match="scheme"):
        TransportUrl.parse("http://x", ("mqtt",))


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "none.toml")


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIG_DIR.glob("*.toml")))
def test_shipped_configs_are_valid(name: str) -> None:
    load_config(CONFIG_DIR / name, env={})


@settings(max_examples=150)
@given(st.text(max_size=300))
def test_garbage_config_raises_only_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(text, env={})


def test_relative_serial_printer_resolves_against_config_dir(tmp_path: Path) -> None:
    f = tmp_path / "conf" / "agent.toml"
    f.parent.mkdir()
    f.write_text('[printer]\nurl = "serial:../var/sim/printer?baud=9600"\n')
    cfg = load_config(f, env={})
    assert cfg.printer_device_url == f"serial://{tmp_path / 'var/sim/printer'}?baud=9600"
    absolute = parse_config('[printer]\nurl = "serial:///dev/ttyUSB0"\n', env={})
    assert absolute.printer_device_url == "serial:///dev/ttyUSB0"


def _uplink_key(key: str, toml_value: str, ok: bool, expected: object) -> str:
    """Parse ``[uplink] key = toml_value``: the value when ``ok``, else the one issue's
    message (the issue must name exactly that key)."""
    text = f"[uplink]\n{key} = {toml_value}\n"
    if ok:
        assert getattr(parse_config(text, env={}).uplink, key) == expected
        return ""
    with pytest.raises(ConfigErrors) as ei:
        parse_config(text, env={})
    assert [i.key for i in ei.value.issues] == [f"uplink.{key}"]
    return ei.value.issues[0].message


@pytest.mark.parametrize(
    ("value", "ok"), [(1, True), (32, True), (64, True), (0, False), (65, False)]
)
def test_uplink_batch_max_bounds(value: int, ok: bool) -> None:
    _uplink_key("batch_max", str(value), ok, value)


@pytest.mark.parametrize(
    ("value", "ok"),
    [("", True), ("de9e" * 16, True), ("DE9E" * 16, True), ("de9e" * 15, False),
     ("de9e" * 16 + "00", False), ("zz" * 32, False), (" " + "de9e" * 16, False)],
)  # fmt: skip
def test_central_pii_key_is_64_hex_digits_or_empty(value: str, ok: bool) -> None:
    """A key the agent could not seal to is refused when the file is read, not when the first
    loss report is sent."""
    message = _uplink_key("central_pii_key", f'"{value}"', ok, value)
    assert ok or "64 hex digits" in message


def test_batch_limit_is_the_wire_limit() -> None:
    from agent.config import TX_BATCH_LIMIT
    from agent.wire.codec import TX_BATCH_MAX

    assert TX_BATCH_LIMIT == TX_BATCH_MAX


def _wire_values(allowed: object) -> list[object]:
    """Every edge of what central may send for one key (``CONFIG_SETTINGS``)."""
    if allowed is bool:
        return [True, False]
    if isinstance(allowed, range):
        return [allowed.start, allowed.start + 1, allowed.stop - 1]
    assert isinstance(allowed, tuple)
    return list(allowed)


def test_every_value_central_may_send_is_one_the_config_takes() -> None:
    """``config_set`` is checked against the wire's bounds; the agent then lays it over its
    config with the file's own checks. The two must agree, or central could send a setting the
    agent stores but refuses (it used to: the wire allowed a window of 1024, the file 1000)."""
    from agent.config import setting_value, with_settings
    from agent.wire.codec import CONFIG_SETTINGS

    base = AgentConfig()
    for key, allowed in CONFIG_SETTINGS.items():
        for value in _wire_values(allowed):
            cfg, issues = with_settings(base, {key: value})
            assert issues == [], (key, value)
            assert setting_value(cfg, key) == value, (key, value)


@settings(max_examples=300)
@given(st.data())
def test_with_settings_changes_exactly_the_keys_given(data: st.DataObject) -> None:
    from agent.config import setting_value, with_settings
    from agent.wire.codec import CONFIG_SETTINGS

    keys = data.draw(st.sets(st.sampled_from(sorted(CONFIG_SETTINGS))))
    settings_ = {k: data.draw(st.sampled_from(_wire_values(CONFIG_SETTINGS[k]))) for k in keys}
    base = parse_config('[uplink]\nbroker = "mqtt://10.0.0.1:1883"\n', env={})
    cfg, issues = with_settings(base, settings_)
    assert issues == []
    for key in CONFIG_SETTINGS:
        expect = settings_[key] if key in settings_ else setting_value(base, key)
        assert setting_value(cfg, key) == expect
    assert cfg.uplink.broker == "mqtt://10.0.0.1:1883"  # the rest of the file is untouched


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("uplink.inflight_window", 0, "1..1024"),
        ("uplink.inflight_window", "32", "expected an integer"),
        ("log.trace_apdus", 1, "expected true or false"),
        ("log.level", "LOUD", "one of TRACE"),
        ("uplink.nope", 1, "unknown key"),
        ("nope.key", 1, "unknown key"),
        ("nodot", 1, "unknown key"),
    ],
)
def test_with_settings_refuses_what_the_file_would(key: str, value: object, message: str) -> None:
    from agent.config import with_settings

    base = AgentConfig()
    cfg, issues = with_settings(base, {key: value, "journal.retention_days": 30})
    assert [i.key for i in issues] == [key]
    assert message in issues[0].message
    assert cfg.journal.retention_days == 30  # the good one still applies
    assert cfg.uplink == base.uplink
    assert cfg.log == base.log


@pytest.mark.parametrize(
    ("value", "ok"), [("0.5", True), ("10", True), ("600", True), ("0", False), ("-1", False),
                      ("601", False)],
)  # fmt: skip
def test_card_apdu_timeout_bounds(value: str, ok: bool) -> None:
    text = f"[card]\napdu_timeout_s = {value}\n"
    if ok:
        assert parse_config(text, env={}).card.apdu_timeout_s == float(value)
        return
    with pytest.raises(ConfigErrors) as ei:
        parse_config(text, env={})
    assert [i.key for i in ei.value.issues] == ["card.apdu_timeout_s"]
