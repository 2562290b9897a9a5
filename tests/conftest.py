"""Fixtures for every test; shared helpers live in :mod:`tests.helpers`."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _own_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``auto``'s measurements (alexnet/precision.py) go to the suite's own cache folder, not the
    user's; the commands the tests start inherit it."""
    os.environ["ALEXNET_CACHE_DIR"] = str(tmp_path_factory.mktemp("alexnet-cache"))
