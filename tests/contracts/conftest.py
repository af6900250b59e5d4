"""pcscd for the contract suite run over PC/SC (agent.testing.pcscd).

``PCSCLITE_CSOCK_NAME`` is set at import to this process's private socket path, the same path
``tests/integration/conftest.py`` uses, because libpcsclite reads it once per process. One
process never runs two daemons on that path: when the integration fixture already started one,
it is reused (``attach``); otherwise one is started for the contract module and stopped after
it. ``SSC_TEST_PCSCD=system`` uses the system pcscd and Debian's vpcd ports instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from agent.testing import pcscd as pcscd_mod

_MODE = os.environ.get("SSC_TEST_PCSCD", "private")
if _MODE != "system":
    os.environ["PCSCLITE_CSOCK_NAME"] = str(pcscd_mod.private_socket_path())


@pytest.fixture(scope="module")
def contract_pcscd() -> Iterator[pcscd_mod.PcscdInstance]:
    missing = pcscd_mod.missing_tools()
    if missing:
        pytest.skip("the PC/SC contract run needs " + ", ".join(missing))
    if _MODE == "system":
        yield pcscd_mod.system_instance()
        return
    running = pcscd_mod.attach()
    if running is not None:
        yield running
        return
    inst = pcscd_mod.start_private(debug=bool(os.environ.get("SSC_PCSCD_DEBUG")))
    try:
        yield inst
    finally:
        inst.cleanup()
