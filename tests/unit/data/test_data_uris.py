"""Data URI parsing and @-escapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from zambeze_mesh.data.uris import DataUri, expand_escapes, parse_uri, split_escape
from zambeze_mesh.errors import InvalidInput

GOOD = [
    ("B://file_2", DataUri("agent", "file_2", agent="B")),
    ("A://train_script.py", DataUri("agent", "train_script.py", agent="A")),
    ("C://user/repository", DataUri("agent", "user/repository", agent="C")),
    ("node-1.olcf_x://a/b", DataUri("agent", "a/b", agent="node-1.olcf_x")),
    ("B:///abs/data/x.h5", DataUri("agent", "/abs/data/x.h5", agent="B")),
    ("B://@agentdir/images", DataUri("agent", "images", agent="B")),
    ("B://@agentdir", DataUri("agent", ".", agent="B")),
    ("file:///abs/path", DataUri("file", "/abs/path")),
    ("file://rel/path", DataUri("file", "rel/path")),
    ("FILE://rel", DataUri("file", "rel")),
    ("file://@workingdir/models", DataUri("file", "@workingdir/models")),
    ("@agentdir/images", DataUri("file", "@agentdir/images")),
    ("@workingdir", DataUri("file", "@workingdir")),
    ("@outputdir/models", DataUri("file", "@outputdir/models")),
    ("@output:train", DataUri("output", "", activity="train")),
    ("@output:train/models/best.pt", DataUri("output", "models/best.pt", activity="train")),
    ("B://name with spaces.txt", DataUri("agent", "name with spaces.txt", agent="B")),
]


@pytest.mark.parametrize(("text", "expected"), GOOD)
def test_parse_good(text: str, expected: DataUri) -> None:
    assert parse_uri(text) == expected


BAD = [
    ("", "empty"),
    ("just/a/path", "not a data URI"),
    ("/abs/path", "not a data URI"),
    ("-bad://x", "bad agent name"),
    ("a b://x", "bad agent name"),
    ("://x", "bad agent name"),
    ("B://", "empty path"),
    ("file://", "empty path"),
    ("B://a/../../etc/passwd", "'..'"),
    ("file://../x", "'..'"),
    ("@agentdir/../x", "'..'"),
    ("B://x\x00y", "NUL"),
    ("B://" + "a" * 5000, "limit is 4096"),
    ("@output:", "missing activity"),
    ("@output:/x", "missing activity"),
    ("@output:bad name/x", "bad activity name"),
    ("@output:act/../x", "'..'"),
    ("@nosuch/x", "unknown escape"),
    ("B://@workingdir/x", "local to a running activity"),
    ("B://@outputdir", "local to a running activity"),
    ("@agentdirx/y", "unknown escape"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_parse_bad(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_uri(text)


def test_parse_non_string() -> None:
    with pytest.raises(InvalidInput):
        parse_uri(b"B://x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    ["B://file_2", "B:///abs/x", "file:///abs", "file://rel", "@agentdir/images", "@output:a/b"],
)
def test_str_round_trips(text: str) -> None:
    uri = parse_uri(text)
    assert parse_uri(str(uri)) == uri


def test_absolute_and_escape_properties() -> None:
    assert parse_uri("B:///x").is_absolute
    assert not parse_uri("B://x").is_absolute
    assert parse_uri("@outputdir/m").escape == "@outputdir"
    assert parse_uri("file://m").escape is None


def test_split_escape() -> None:
    assert split_escape("@agentdir/a/b") == ("@agentdir", "a/b")
    assert split_escape("@agentdir") == ("@agentdir", "")
    assert split_escape("a/@agentdir") == (None, "a/@agentdir")


def test_expand_escapes(tmp_path: Path) -> None:
    a, w, o = tmp_path / "agent", tmp_path / "work", tmp_path / "out"
    dirs = {"agentdir": a, "workingdir": w, "outputdir": o}
    assert expand_escapes("@agentdir/images", **dirs) == a / "images"
    assert expand_escapes("@agentdir", **dirs) == a
    assert expand_escapes("@workingdir/tmp/x", **dirs) == w / "tmp" / "x"
    assert expand_escapes("@outputdir/", **dirs) == o
    assert expand_escapes("plain/rel", **dirs) == Path("plain/rel")
    assert expand_escapes("/abs/@agentdir", **dirs) == Path("/abs/@agentdir")


def test_expand_escapes_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not defined"):
        expand_escapes("@outputdir/x", agentdir=tmp_path)
    with pytest.raises(InvalidInput, match=r"'\.\.'"):
        expand_escapes("@agentdir/../x", agentdir=tmp_path)
    with pytest.raises(InvalidInput, match="unknown escape"):
        expand_escapes("@tmp/x", agentdir=tmp_path)
    with pytest.raises(InvalidInput, match="NUL"):
        expand_escapes("@agentdir/\x00", agentdir=tmp_path)
