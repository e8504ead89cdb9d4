"""Finding free loopback ports (agents use PORT and PORT+1)."""

from __future__ import annotations

import socket


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pair() -> int:
    """A port P on 127.0.0.1 such that P and P+1 are both free right now."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 65535 and _free(port + 1):
            return port
    raise RuntimeError("no free port pair on 127.0.0.1")
