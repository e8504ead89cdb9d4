"""``zmesh provenance CAMPAIGN --out DIR|FILE.zip``: a campaign's Provenance Run Crate."""

from __future__ import annotations

from pathlib import Path

from zambeze_mesh.errors import FailedPrecondition, InvalidInput
from zambeze_mesh.settings.home import Home


def export(
    home: Home,
    cid: str,
    out: str,
    *,
    with_data: bool = False,
    max_data_mib: float = 100.0,
    check: bool = True,
    license: str = "",
    validate: bool = False,
) -> int:
    """Export the crate through the local agent's ``Campaigns`` API (the campaign's
    monitor); ``--with-data`` fetches outputs as the local agent (like ``zmesh data
    get``); ``--validate`` runs roc-validator offline on the result."""
    from zambeze_mesh.campaign.client import connect
    from zambeze_mesh.campaign.loop import bridge

    try:
        from zambeze_mesh.provenance.crate import DEFAULT_LICENSE
        from zambeze_mesh.provenance.export import export_crate
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise FailedPrecondition(
            f"provenance needs the 'provenance' extra (pip install 'zambeze-mesh[provenance]'): "
            f"{exc}"
        ) from None
    if max_data_mib < 0:
        raise InvalidInput("--max-data must be >= 0")
    home.require()
    client = connect(home=str(home.root), set_default=False)

    async def main() -> Path:
        data = None
        if with_data:
            from zambeze_mesh.data.client import DataClient

            data = DataClient.from_home(home)
        try:
            return await export_crate(
                cid,
                out,
                client=client,
                license=license or DEFAULT_LICENSE,
                check_outputs=check,
                with_data=data,
                max_data_bytes=int(max_data_mib * 2**20),
            )
        finally:
            if data is not None:
                await data.close()
            await client.close()

    path = bridge.run(main())
    print(f"wrote the Provenance Run Crate of campaign {cid} to {path}")
    if validate:
        from zambeze_mesh.provenance.validate import PROFILE
        from zambeze_mesh.provenance.validate import validate as run_validator

        report = run_validator(path)
        if not report.passed:
            print(f"{PROFILE}: NOT valid\n{report.summary()}")
            return 1
        print(f"{PROFILE}: valid (offline, required checks)")
    return 0
