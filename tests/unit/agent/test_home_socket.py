"""A deep agent home still gets a Unix socket address that fits sun_path."""

from __future__ import annotations

import os
from pathlib import Path

from zambeze_mesh.settings.home import MAX_SOCKET_PATH, Home


def test_short_home_keeps_its_socket_inside(tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    assert home.socket == home.root / "agent.sock"
    home.prepare_socket_dir()  # nothing to create


def test_deep_home_gets_a_short_private_socket_path(tmp_path: Path) -> None:
    deep = Home(tmp_path / ("d" * 60) / ("e" * 60))
    sock = deep.socket
    assert len(os.fsencode(sock)) <= MAX_SOCKET_PATH
    assert sock == Home(deep.root).socket  # stable: clients find the same path
    assert sock != Home(tmp_path / ("d" * 60) / ("f" * 60)).socket
    deep.prepare_socket_dir()
    assert sock.parent.stat().st_mode & 0o777 == 0o700


def test_a_link_to_a_deep_home_finds_the_same_socket(tmp_path: Path) -> None:
    real = tmp_path / ("r" * 60) / ("s" * 60)
    real.mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    assert Home(link / ("t" * 60)).socket == Home(real / ("t" * 60)).socket
