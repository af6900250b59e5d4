"""PSAM / security module: the ``SecurityModule`` port and its implementations (DESIGN §3).

* ``agent.psam.crypto``  card-key cryptography (3DES/SM4 MACs, diversification), sans-IO;
* ``agent.psam.module``  the ``SecurityModule`` port card flows use;
* ``agent.psam.client``  the PSAM client (``80 1A``/``80 FA``) and ``PsamSecurityModule``;
* ``agent.psam.soft``    ``SoftSecurityModule`` and the helpers central uses (test keys only).
"""

from agent.psam.client import PsamInfo, PsamSecurityModule
from agent.psam.crypto import Algorithm
from agent.psam.module import SecurityModule
from agent.psam.soft import SoftSecurityModule, card_key, compute_seal, verify_seal

__all__ = [
    "Algorithm",
    "PsamInfo",
    "PsamSecurityModule",
    "SecurityModule",
    "SoftSecurityModule",
    "card_key",
    "compute_seal",
    "verify_seal",
]
