"""UI tests: fixed time zone (event log timestamps) and a fake service layer."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from hypercore_tui.ui.app import HypercoreApp

from .fakes import FakeBackend

#: What the app sees of its environment: no TMUX, no DISPLAY (console and display show
#: instructions), a fixed user and SSH server address (the tunnel command).
ENVIRON = {"USER": "alice", "PATH": "/usr/bin",
           "SSH_CONNECTION": "203.0.113.5 50000 198.51.100.7 22"}


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def app(backend: FakeBackend) -> HypercoreApp:
    # No TMUX/DISPLAY: the console and display paths show instructions.
    return HypercoreApp(backend, environ=ENVIRON)
