"""What the secondary windows' tests build them with: the real AppContext (temp
BASTION_HOME, real settings file, real registry), a real Engine and the real
`AppServices` (no chat service: these windows do not chat)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bastion_desktop.context import AppContext
from bastion_desktop.ui.engine import Engine
from bastion_desktop.ui.services import AppServices


def make_services(context: AppContext, engine: Engine, store: Any = None) -> AppServices:
    return AppServices(context=context, engine=engine, store=store, chat=None)


@pytest.fixture
def engine() -> Iterator[Engine]:
    running = Engine()
    running.start()
    yield running
    running.stop()


@pytest.fixture
def context() -> AppContext:
    return AppContext.start()


@pytest.fixture
def services(context: AppContext, engine: Engine) -> Any:
    return make_services(context, engine)
