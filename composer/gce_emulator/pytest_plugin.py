"""pytest fixtures: a fresh emulator per test, seeded with the demo fleet, and client settings for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gce_emulator import Emulator
from gce_emulator.__main__ import DEMO_SEED


@pytest.fixture
def gce_emulator() -> Iterator[Emulator]:
    """A started emulator (demo seed, real time) on a free loopback port; stopped afterwards."""
    emulator = Emulator(DEMO_SEED)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def anonymous_credentials() -> Any:
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()


@pytest.fixture
def compute_client_options(gce_emulator: Emulator) -> dict[str, str]:
    return {"api_endpoint": gce_emulator.url}
