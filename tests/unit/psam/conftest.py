from __future__ import annotations

import pytest

from agent.profile import CardProfile, load_profile


@pytest.fixture(scope="session")
def profile() -> CardProfile:
    return load_profile("default")
