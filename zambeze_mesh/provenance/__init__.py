"""FAIR provenance: a campaign as a Provenance Run Crate (RO-Crate).

:func:`export_crate` fetches a campaign's record through the public ``Campaigns``
API (``GetProvenance``) and writes it with :mod:`rocrate` (the ``provenance``
extra) as a directory or a ``.zip``. :mod:`.params` holds the rule that keeps
secrets out. ``rocrate`` is imported only when a crate is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zambeze_mesh.provenance.crate import build_crate
    from zambeze_mesh.provenance.export import export_crate

__all__ = ["build_crate", "export_crate"]


def __getattr__(name: str) -> Any:
    if name == "build_crate":
        from zambeze_mesh.provenance.crate import build_crate

        return build_crate
    if name == "export_crate":
        from zambeze_mesh.provenance.export import export_crate

        return export_crate
    raise AttributeError(name)
