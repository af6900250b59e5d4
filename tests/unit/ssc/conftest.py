"""Fixtures: virtual cards (DES and SM4) and the virtual PSAM behind the real PSAM client."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agent.profile import CardProfile, load_profile
from agent.psam.client import PsamSecurityModule
from agent.psam.crypto import Algorithm
from agent.sim.card import VirtualSscCard
from agent.sim.channel import FaultPlan, SimChannel
from agent.sim.factory import CardFactory
from agent.sim.psam import VirtualPsam
from agent.ssc.app import SscApplication


@pytest.fixture(scope="session")
def profile() -> CardProfile:
    return load_profile("default")


@pytest.fixture(params=[Algorithm.DES, Algorithm.SM4], ids=["des", "sm4"])
def algorithm(request: pytest.FixtureRequest) -> Algorithm:
    alg: Algorithm = request.param
    return alg


@pytest.fixture
def make_card(profile: CardProfile, algorithm: Algorithm) -> Callable[..., VirtualSscCard]:
    factory = CardFactory(profile, seed=11)

    def make(**kwargs: object) -> VirtualSscCard:
        kwargs.setdefault("algorithm", algorithm)
        return factory.issue(**kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def card(make_card: Callable[..., VirtualSscCard]) -> VirtualSscCard:
    return make_card()


@pytest.fixture
def sam(profile: CardProfile) -> PsamSecurityModule:
    return PsamSecurityModule(SimChannel(VirtualPsam(profile)), profile)


@pytest.fixture
def open_app(
    profile: CardProfile, sam: PsamSecurityModule
) -> Callable[..., tuple[SscApplication, SimChannel]]:
    def open_(
        card: VirtualSscCard, *, faults: FaultPlan | None = None, **kwargs: object
    ) -> tuple[SscApplication, SimChannel]:
        channel = SimChannel(card, faults=faults)
        kwargs.setdefault("sam", sam)
        return SscApplication(channel, profile, **kwargs), channel  # type: ignore[arg-type]

    return open_
