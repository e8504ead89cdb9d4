"""Fixtures of the system tests."""

from __future__ import annotations

import pytest

from tests.system.netns import unavailable


@pytest.fixture(autouse=True)
def _needs_netns(request: pytest.FixtureRequest) -> None:
    """Tests marked ``netns`` skip, saying why, where network namespaces are unavailable."""
    if request.node.get_closest_marker("netns") is not None:
        why = unavailable()
        if why:
            pytest.skip(why)
