"""Where ``zmesh join`` reads its token (never needed on argv), and that no document or
script we ship puts one on a command line."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from zambeze_mesh.cli.main import _join_token, build_parser
from zambeze_mesh.errors import InvalidInput

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "ZMESH1-" + "a" * 64 + "-" + "b" * 43


def _args(*argv: str) -> object:
    return build_parser().parse_args(["join", "h:1", "--name", "n", "--listen", "l:1", *argv])


class _Stdin(io.StringIO):
    def __init__(self, text: str, tty: bool = False) -> None:
        super().__init__(text)
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_token_from_file_env_and_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ZMESH_TOKEN", raising=False)
    f = tmp_path / "t"
    f.write_text(TOKEN + "\n")
    assert _join_token(_args("--token-file", str(f))) == TOKEN
    monkeypatch.setattr("sys.stdin", _Stdin(TOKEN + "\n"))
    assert _join_token(_args("--token-file", "-")) == TOKEN
    monkeypatch.setattr("sys.stdin", _Stdin(TOKEN + "\n"))
    assert _join_token(_args()) == TOKEN  # piped, no option
    monkeypatch.setenv("ZMESH_TOKEN", TOKEN)
    monkeypatch.setattr("sys.stdin", _Stdin("", tty=True))
    assert _join_token(_args()) == TOKEN
    assert capsys.readouterr().err == ""
    assert _join_token(_args("--token", TOKEN)) == TOKEN  # still works, with a warning
    assert "deprecated" in capsys.readouterr().err


def test_missing_token_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZMESH_TOKEN", raising=False)
    monkeypatch.setattr("sys.stdin", _Stdin(""))
    with pytest.raises(InvalidInput, match="no join token"):
        _join_token(_args())
    with pytest.raises(InvalidInput, match="cannot read the token file"):
        _join_token(_args("--token-file", str(tmp_path / "missing")))


def test_no_token_on_a_command_line_in_docs_and_scripts() -> None:
    files = [ROOT / "README.md", *(p for p in (ROOT / "scripts").rglob("*") if p.is_file())]
    assert any(p.suffix == ".ipynb" for p in files)  # the notebooks are covered too
    argv_token = re.compile(r"""--token[\s"',]""")
    offenders = [
        f"{path.relative_to(ROOT)}:{i}"
        for path in files
        if "__pycache__" not in path.parts
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if argv_token.search(line)
    ]
    assert not offenders, offenders
