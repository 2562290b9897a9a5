"""Fixtures for every test; shared helpers live in :mod:`tests.helpers`."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
