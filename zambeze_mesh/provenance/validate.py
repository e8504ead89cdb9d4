"""Validate a crate offline with ``roc-validator`` (``rocrate-validator validate``).

The validator needs the RO-Crate JSON-LD context, which it fetches over HTTP into a
``requests-cache`` cache; ``--offline`` only reads that cache. On a machine that
cannot reach the context's host, :func:`seed_cache` fills a cache with local
copies of the published contexts (:data:`CONTEXTS`), served by a local transport
adapter: no network is used. What the
offline run still cannot fetch (profile documents, remote data entities) is not
checked; :func:`validate` returns those checks as ``skipped``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from zambeze_mesh.errors import FailedPrecondition

PROFILE = "provenance-run-crate-0.5"
CONTEXTS = {
    "https://w3id.org/ro/crate/1.1/context": (
        "zambeze_mesh.provenance",
        "data/ro-crate-1.1-context.jsonld",
    ),
    "https://w3id.org/ro/crate/1.3/context": ("rocrate", "data/ro-crate.jsonld"),
}
"""The RO-Crate contexts served to the validator offline: 1.1 as published (CC0; a
copy shipped with this package, as ``rocrate`` 0.9.0 shipped it), 1.3 from ``rocrate``."""


@dataclass
class Report:
    """The validator's verdict: ``passed`` and the issues at or above the severity."""

    passed: bool
    issues: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line per issue: severity, check id, message."""
        return "\n".join(
            f"{i.get('severity')} {i.get('check', {}).get('identifier')}: {i.get('message')}"
            for i in self.issues
        )


def seed_cache(cache_path: str | os.PathLike[str]) -> Path:
    """Put the RO-Crate contexts (:data:`CONTEXTS`) into a validator cache."""
    import requests
    import urllib3
    from requests.adapters import HTTPAdapter
    from requests_cache import CachedSession

    docs = {
        url: resources.files(package).joinpath(name).read_bytes()
        for url, (package, name) in CONTEXTS.items()
    }

    class _Local(HTTPAdapter):
        def send(self, request: requests.PreparedRequest, *a: Any, **kw: Any) -> Any:
            body = docs[str(request.url)]
            raw = urllib3.HTTPResponse(
                body=io.BytesIO(body),
                status=200,
                headers={"Content-Type": "application/ld+json"},
                preload_content=False,
                request_url=request.url,
            )
            return self.build_response(request, raw)

    path = Path(cache_path)
    session = CachedSession(cache_name=str(path), backend="sqlite", expire_after=-1)
    try:
        session.mount("https://", _Local())
        for url in docs:
            session.get(url).raise_for_status()
    finally:
        session.close()
    return path


def validator_command() -> list[str]:
    """How to run ``rocrate-validator`` (the script next to this Python, else PATH)."""
    near = Path(sys.executable).with_name("rocrate-validator")
    if near.exists():
        return [str(near)]
    found = shutil.which("rocrate-validator")
    if found is None:
        raise FailedPrecondition(
            "rocrate-validator is not installed (pip install 'zambeze-mesh[provenance]')"
        )
    return [found]


def validate(
    crate: str | os.PathLike[str],
    *,
    profile: str = PROFILE,
    severity: str = "REQUIRED",
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float = 300.0,
) -> Report:
    """Run ``rocrate-validator validate --offline -p PROFILE`` on a crate dir or zip."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="zmesh-rocv-") as tmp:
        cache = Path(cache_dir) if cache_dir else Path(tmp) / "http-cache"
        seed_cache(cache)
        out = Path(tmp) / "report.json"
        target = Path(crate)
        if zipfile.is_zipfile(target):
            # roc-validator 0.13 cannot write a JSON report for a zip: check its
            # unpacked content (the same files) instead.
            unpacked = Path(tmp) / "crate"
            with zipfile.ZipFile(target) as z:
                z.extractall(unpacked)
            target = unpacked
        cmd = [
            *validator_command(),
            "validate",
            "--offline",
            "--cache-path",
            str(cache),
            "-p",
            profile,
            "-l",
            severity,
            "--no-paging",
            "--show-skipped-checks",
            "-f",
            "json",
            "-o",
            str(out),
            str(target),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        text = out.read_text() if out.exists() else ""
        if not text.strip():
            raise FailedPrecondition(
                f"rocrate-validator failed (exit {proc.returncode}): {proc.stderr[-2000:]}"
            )
        raw = json.loads(text)
    return Report(
        passed=bool(raw.get("passed")),
        issues=list(raw.get("issues", [])),
        skipped=list(raw.get("skipped_check_details", [])),
        raw=raw,
    )
