"""zambeze-mesh: cross-facility scientific workflows on a gRPC peer-to-peer agent mesh."""

from __future__ import annotations

__version__ = "0.1.0"
