"""The private pcscd used by the tests: one implementation, in ``agent.testing.pcscd``.

(The HIL suite, ``sim up`` and the benchmarks start pcscd the same way; see that module.)
"""

from agent.testing.pcscd import (
    DEFAULT_SOCKET,
    READER_PREFIX,
    SLOTS,
    SYSTEM_VPCD_PORT,
    PcscdInstance,
    attach,
    free_port_pair,
    missing_tools,
    pcscd_binary,
    private_socket_path,
    reader_conf,
    start_private,
    system_instance,
    vpcd_driver,
)

__all__ = [
    "DEFAULT_SOCKET",
    "READER_PREFIX",
    "SLOTS",
    "SYSTEM_VPCD_PORT",
    "PcscdInstance",
    "attach",
    "free_port_pair",
    "missing_tools",
    "pcscd_binary",
    "private_socket_path",
    "reader_conf",
    "start_private",
    "system_instance",
    "vpcd_driver",
]
