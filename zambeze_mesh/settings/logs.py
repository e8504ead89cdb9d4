"""Structured logs: one JSON object per line, always carrying the agent name."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import time
from pathlib import Path
from typing import Any


class JsonFormatter(logging.Formatter):
    """Format records as single-line JSON with ``ts``, ``level``, ``agent`` and ``event``."""

    def __init__(self, agent: str) -> None:
        super().__init__()
        self.agent = agent

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "agent": self.agent,
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(
    agent: str,
    path: Path | None,
    level: str = "info",
    *,
    max_bytes: int = 10 * 1024 * 1024,
    backups: int = 3,
) -> logging.Handler | None:
    """Send ``zambeze_mesh`` logs to ``path`` (JSON lines); returns the handler added.

    The file rotates at ``max_bytes`` (``agent.log.1`` … ``agent.log.<backups>``), so a
    flood of logged events cannot fill the disk.
    """
    logger = logging.getLogger("zambeze_mesh")
    logger.setLevel(level.upper())
    if path is None:
        return None
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups)
    handler.setFormatter(JsonFormatter(agent))
    logger.addHandler(handler)
    return handler


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event: ``log_event(log, "join.accepted", name="b")``."""
    logger.log(level, event, extra={"fields": fields})


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch."""
    return int(time.time() * 1000)


def rotate_if_large(path: Path, max_bytes: int, backups: int = 1) -> None:
    """Shift ``path`` to ``path.1`` (and older ones on) when it exceeds ``max_bytes``.

    For the daemon's captured stdout/stderr (``agent.out``), rotated at each start.
    """
    try:
        if path.stat().st_size <= max_bytes:
            return
    except FileNotFoundError:
        return
    for i in range(backups, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        newer = path if i == 1 else path.with_name(f"{path.name}.{i - 1}")
        if newer.exists():
            os.replace(newer, older)
