"""Fixtures for the security tests: throwaway mesh CAs and issued identities."""

from __future__ import annotations

import pytest

from zambeze_mesh.security import Identity, MeshCA


@pytest.fixture(scope="session")
def ca() -> MeshCA:
    """The CA of mesh ``alpha``."""
    return MeshCA.create("alpha")


@pytest.fixture(scope="session")
def other_ca() -> MeshCA:
    """A CA of another mesh, ``beta``."""
    return MeshCA.create("beta")


@pytest.fixture(scope="session")
def rogue_ca() -> MeshCA:
    """A second CA that claims the same mesh name ``alpha``."""
    return MeshCA.create("alpha")


@pytest.fixture()
def agent_id() -> Identity:
    return Identity.agent("alpha", "a1")
