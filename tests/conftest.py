"""Fixtures only; the helpers the tests share are in tests/support.py."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True, scope="session")
def _state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Servers the tests start (in process or as subprocesses) keep their state here, not in
    the home directory."""
    previous = os.environ.get("POSTHOG_STATE_DIR")
    os.environ["POSTHOG_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    yield
    if previous is None:
        os.environ.pop("POSTHOG_STATE_DIR", None)
    else:
        os.environ["POSTHOG_STATE_DIR"] = previous
