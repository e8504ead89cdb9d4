"""Describing shipped functions for provenance never fails the activity."""

from __future__ import annotations

from pathlib import Path

from zambeze_mesh.provenance.params import function_info


def test_function_compiled_under_another_files_name_has_no_source(tmp_path: Path) -> None:
    """Code compiled from a string under a file name whose lines are not that code (a
    README example): describing it must not fail, it just has no source."""
    fake = tmp_path / "README.md"
    fake.write_text("# a title\n\n```python\nx = (\n")
    scope: dict[str, object] = {}
    exec(compile("f = lambda x: x * x\n" * 3, str(fake), "exec"), scope)
    name, source, params = function_info(scope["f"], [12], None)  # type: ignore[arg-type]
    assert name.endswith("<lambda>") and params == {"args[0]": "12"}
    assert source == ""
