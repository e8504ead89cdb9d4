"""Sandbox: what an agent may serve and accept."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from zambeze_mesh.data.sandbox import Sandbox, open_regular
from zambeze_mesh.errors import FailedPrecondition, InvalidInput, NotFound, NotPermitted


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Sandbox, Path, Path, Path]:
    agent = tmp_path / "agent"
    root = tmp_path / "export"
    outside = tmp_path / "outside"
    for d in (agent, root, outside):
        d.mkdir()
    (agent / "a.txt").write_text("a")
    (agent / "sub").mkdir()
    (agent / "sub" / "b.txt").write_text("b")
    (root / "data.h5").write_text("d")
    (outside / "secret").write_text("s")
    (outside / "dir").mkdir()
    (outside / "dir" / "f").write_text("f")
    return Sandbox(agent, [root]), agent, root, outside


def test_allowed_paths(layout: tuple[Sandbox, Path, Path, Path]) -> None:
    sb, agent, root, _ = layout
    assert sb.resolve("a.txt") == agent / "a.txt"
    assert sb.resolve("sub/b.txt") == agent / "sub" / "b.txt"
    assert sb.resolve("./sub/./b.txt") == agent / "sub" / "b.txt"
    assert sb.resolve("sub") == agent / "sub"
    assert sb.resolve("") == agent
    assert sb.resolve(str(root / "data.h5")) == root / "data.h5"
    assert sb.resolve(str(root)) == root
    assert sb.resolve(str(agent / "a.txt")) == agent / "a.txt"


def test_dotdot_refused(layout: tuple[Sandbox, Path, Path, Path]) -> None:
    sb, _, root, _ = layout
    for p in ("../outside/secret", "sub/../a.txt", str(root) + "/../outside/secret", ".."):
        with pytest.raises(NotPermitted, match=r"'\.\.'"):
            sb.resolve(p)


def test_absolute_outside_roots_refused(layout: tuple[Sandbox, Path, Path, Path]) -> None:
    sb, _, root, outside = layout
    with pytest.raises(NotPermitted, match="outside"):
        sb.resolve(str(outside / "secret"))
    # A sibling whose name merely starts with the root's name is not inside it.
    sibling = Path(str(root) + "2")
    sibling.mkdir()
    (sibling / "x").write_text("x")
    with pytest.raises(NotPermitted, match="outside"):
        sb.resolve(str(sibling / "x"))


def test_symlink_file_escape(layout: tuple[Sandbox, Path, Path, Path]) -> None:
    sb, agent, root, outside = layout
    (agent / "link").symlink_to(outside / "secret")
    (root / "link").symlink_to("../outside/secret")
    with pytest.raises(NotPermitted, match="symlink"):
        sb.resolve("link")
    with pytest.raises(NotPermitted, match="symlink"):
        sb.resolve(str(root / "link"))


def test_symlink_directory_escape(layout: tuple[Sandbox, Path, Path, Path]) -> None:
    sb, agent, _, outside = layout
    (agent / "dlink").symlink_to(outside / "dir")
    with pytest.raises(NotPermitted, match="symlink"):
        sb.resolve("dlink/f")
    with pytest.raises(NotPermitted, match="symlink"):
        sb.resolve("dlink")


def test_symlink_out_and_back_in_is_refused(layout: tuple[Sandbox, Path, Path, Path]) -> None:
    """Every component is checked: a hop outside the root is refused even if it returns."""
    sb, agent, _, outside = layout
    (outside / "back").symlink_to(agent / "sub")
    (agent / "hop").symlink_to(outside)
    with pytest.raises(NotPermitted, match="symlink"):
        sb.resolve("hop/back/b.txt")


def test_symlink_inside_root_allowed(layout: tuple[Sandbox, Path, Path, Path]) -> None:
    sb, agent, _, _ = layout
    (agent / "ok").symlink_to("sub/b.txt")
    (agent / "okdir").symlink_to(agent / "sub")
    assert sb.resolve("ok") == agent / "sub" / "b.txt"
    assert sb.resolve("okdir/b.txt") == agent / "sub" / "b.txt"


def test_dangling_and_missing(layout: tuple[Sandbox, Path, Path, Path]) -> None:
    sb, agent, root, _ = layout
    (agent / "dangling").symlink_to(agent / "nothing")
    with pytest.raises(NotFound):
        sb.resolve("dangling")
    with pytest.raises(NotFound):
        sb.resolve("missing.txt")
    with pytest.raises(NotFound):
        sb.resolve("a.txt/child")
    with pytest.raises(NotFound):
        sb.resolve(str(root / "nope"))


def test_symlink_loop_refused(layout: tuple[Sandbox, Path, Path, Path]) -> None:
    sb, agent, _, _ = layout
    (agent / "l1").symlink_to(agent / "l2")
    (agent / "l2").symlink_to(agent / "l1")
    with pytest.raises((NotPermitted, NotFound)):
        sb.resolve("l1")


def test_fifo_and_socket_refused(layout: tuple[Sandbox, Path, Path, Path]) -> None:
    sb, agent, _, _ = layout
    os.mkfifo(agent / "fifo")
    with pytest.raises(NotPermitted, match="FIFO"):
        sb.resolve("fifo")
    s = socket.socket(socket.AF_UNIX)
    try:
        sock_path = agent / "s.sock"
        s.bind(str(sock_path))
        with pytest.raises(NotPermitted, match="socket"):
            sb.resolve("s.sock")
    finally:
        s.close()


def test_dev_null_refused(tmp_path: Path) -> None:
    sb = Sandbox(tmp_path, [])
    with pytest.raises(NotPermitted, match="outside"):
        sb.resolve("/dev/null")
    # Even when /dev is exported, a device is not a file we serve.
    sb_dev = Sandbox(tmp_path, [Path("/dev")])
    with pytest.raises(NotPermitted, match="device"):
        sb_dev.resolve("/dev/null")


def test_nul_and_long_paths(layout: tuple[Sandbox, Path, Path, Path]) -> None:
    sb = layout[0]
    with pytest.raises(InvalidInput, match="NUL"):
        sb.resolve("a\x00b")
    with pytest.raises(InvalidInput, match="limit"):
        sb.resolve("a/" * 3000)
    with pytest.raises(InvalidInput, match="longer than"):
        sb.resolve("x" * 300)


def test_open_regular_refuses_symlink_and_fifo(layout: tuple[Sandbox, Path, Path, Path]) -> None:
    _, agent, _, outside = layout
    (agent / "link").symlink_to(outside / "secret")
    os.mkfifo(agent / "fifo")
    with pytest.raises(NotPermitted):
        open_regular(agent / "link")
    with pytest.raises(NotPermitted, match="FIFO"):
        open_regular(agent / "fifo")
    fd = open_regular(agent / "a.txt")
    try:
        assert os.read(fd, 10) == b"a"
    finally:
        os.close(fd)


def test_resolve_for_write(layout: tuple[Sandbox, Path, Path, Path]) -> None:
    sb, agent, root, outside = layout
    dest = sb.resolve_for_write("new/deep/file.bin")
    assert dest == agent / "new" / "deep" / "file.bin"
    assert dest.parent.is_dir() and not dest.exists()
    assert sb.resolve_for_write("a.txt") == agent / "a.txt"  # overwrite a file: fine
    assert sb.resolve_for_write(str(root / "up" / "x")) == root / "up" / "x"
    with pytest.raises(FailedPrecondition, match="directory"):
        sb.resolve_for_write("sub")
    with pytest.raises(FailedPrecondition, match="not a directory"):
        sb.resolve_for_write("a.txt/x")
    with pytest.raises(NotPermitted, match=r"'\.\.'"):
        sb.resolve_for_write("../outside/evil")
    with pytest.raises(NotPermitted, match="outside"):
        sb.resolve_for_write(str(outside / "evil"))
    with pytest.raises(InvalidInput, match="root"):
        sb.resolve_for_write("")
    (agent / "dlink").symlink_to(outside)
    with pytest.raises(NotPermitted, match="symlink"):
        sb.resolve_for_write("dlink/evil")
    assert not (outside / "evil").exists()
    (agent / "flink").symlink_to(outside / "secret")
    with pytest.raises(NotPermitted, match="symlink"):
        sb.resolve_for_write("flink")
    os.mkfifo(agent / "fifo")
    with pytest.raises(NotPermitted, match="FIFO"):
        sb.resolve_for_write("fifo")


def test_root_of(layout: tuple[Sandbox, Path, Path, Path]) -> None:
    sb, agent, root, outside = layout
    assert sb.root_of(root / "data.h5") == root
    assert sb.root_of(agent / "sub") == agent
    with pytest.raises(NotPermitted):
        sb.root_of(outside)
