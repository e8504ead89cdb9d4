"""Make the demo's scripts (scripts/demo_assets) importable as top-level modules."""

from __future__ import annotations

import sys
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[3] / "scripts" / "demo_assets"
if str(ASSETS) not in sys.path:
    sys.path.insert(0, str(ASSETS))
