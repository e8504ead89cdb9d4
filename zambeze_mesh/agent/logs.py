"""Structured logs: one JSON object per line, always carrying the agent name."""

from __future__ import annotations

import json
import logging
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


def setup_logging(agent: str, path: Path | None, level: str = "info") -> logging.Handler | None:
    """Send ``zambeze_mesh`` logs to ``path`` (JSON lines); returns the handler added."""
    logger = logging.getLogger("zambeze_mesh")
    logger.setLevel(level.upper())
    if path is None:
        return None
    handler = logging.FileHandler(path)
    handler.setFormatter(JsonFormatter(agent))
    logger.addHandler(handler)
    return handler


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event: ``log_event(log, "join.accepted", name="b")``."""
    logger.log(level, event, extra={"fields": fields})


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch."""
    return int(time.time() * 1000)
