"""The PC/SC error map and URL parser (no pcscd needed): every code the driver names × its type."""

from __future__ import annotations

import pytest

from agent.drivers import pcsc
from agent.errors import (
    AgentError,
    CardRemovedError,
    ConfigError,
    DeviceError,
    DeviceTimeoutError,
    NoCardError,
    PcscServiceError,
    ReaderBusyError,
    ReaderUnavailableError,
)

TABLE = [
    (pcsc.SCARD_W_REMOVED_CARD, CardRemovedError, "card_removed"),
    (pcsc.SCARD_W_RESET_CARD, CardRemovedError, "card_reset"),
    (pcsc.SCARD_E_NO_SMARTCARD, NoCardError, "no_card"),
    (pcsc.SCARD_E_UNKNOWN_READER, ReaderUnavailableError, "reader_unavailable"),
    (pcsc.SCARD_E_READER_UNAVAILABLE, ReaderUnavailableError, "reader_unavailable"),
    (pcsc.SCARD_E_NO_SERVICE, PcscServiceError, "pcsc_unavailable"),
    (pcsc.SCARD_E_SERVICE_STOPPED, PcscServiceError, "pcsc_unavailable"),
    (pcsc.SCARD_E_NO_READERS_AVAILABLE, PcscServiceError, "pcsc_unavailable"),
    (pcsc.SCARD_E_INVALID_HANDLE, PcscServiceError, "pcsc_unavailable"),
    (pcsc.SCARD_F_COMM_ERROR, PcscServiceError, "pcsc_unavailable"),
    (pcsc.SCARD_E_TIMEOUT, DeviceTimeoutError, "device_timeout"),
    (pcsc.SCARD_E_SHARING_VIOLATION, ReaderBusyError, "reader_busy"),
    (pcsc.SCARD_W_UNRESPONSIVE_CARD, DeviceError, "card_unresponsive"),
    (pcsc.SCARD_E_PROTO_MISMATCH, DeviceError, "protocol_mismatch"),
    (0x80100001, DeviceError, "pcsc_error"),  # SCARD_F_INTERNAL_ERROR: anything else
]


@pytest.mark.parametrize(("hr", "kind", "code"), TABLE)
def test_error_map(hr: int, kind: type[AgentError], code: str) -> None:
    err = pcsc.error_for(hr, "SCardX")
    assert type(err) is kind
    assert err.code == code
    assert err.message.startswith("SCardX")
    with pytest.raises(kind):
        pcsc.check(hr, "SCardX")


def test_check_success_and_junk() -> None:
    pcsc.check(pcsc.SCARD_S_SUCCESS)
    with pytest.raises(DeviceError):
        pcsc.check("not a code")


def test_retryability_follows_blame() -> None:
    assert pcsc.error_for(pcsc.SCARD_E_NO_SERVICE).retryable
    assert pcsc.error_for(pcsc.SCARD_E_SHARING_VIOLATION).retryable
    assert not pcsc.error_for(pcsc.SCARD_W_REMOVED_CARD).retryable


def test_map_exceptions_translates_swig_errors() -> None:
    with pytest.raises(DeviceError) as info, pcsc.map_exceptions("SCardTransmit"):
        raise TypeError("in method 'SCardTransmit', argument 3")
    assert info.value.code == "pcsc_error"
    assert isinstance(info.value.__cause__, TypeError)
    with pytest.raises(NoCardError), pcsc.map_exceptions():
        raise NoCardError("kept as is")


@pytest.mark.parametrize(
    ("url", "glob"),
    [
        ("pcsc://", "*"),
        ("pcsc://*", "*"),
        ("pcsc://Virtual PCD 00 00", "Virtual PCD 00 00"),
        ("pcsc://Virtual%20PCD%20*%2001", "Virtual PCD * 01"),
        ("pcsc://ACS ACR39U*?exclusive=1", "ACS ACR39U*"),
    ],
)
def test_parse_pcsc_url(url: str, glob: str) -> None:
    assert pcsc.parse_pcsc_url(url) == glob


@pytest.mark.parametrize("url", ["sim://default", "serial:///dev/ttyUSB0", "Virtual PCD"])
def test_parse_pcsc_url_rejects_other_schemes(url: str) -> None:
    with pytest.raises(ConfigError):
        pcsc.parse_pcsc_url(url)
