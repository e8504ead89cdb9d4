"""tls-stream wire pieces: striping, request bounds, checksum choice, config keys."""

from __future__ import annotations

import pytest

from zambeze_mesh.data.methods import TLS_STREAM, choose_method
from zambeze_mesh.data.tlsrecv import DigestSink
from zambeze_mesh.data.tlswire import (
    CHECKS,
    MAX_FRAME,
    MIN_FRAME,
    RangeRequest,
    choose_check,
    error_from,
    stripe_frames,
)
from zambeze_mesh.errors import DataIntegrityError, InvalidInput, NotPermitted, ZmeshError
from zambeze_mesh.settings.config import AgentConfig


def test_stripes_cover_the_range_once_in_frame_order() -> None:
    for start, end, frame, k in [(0, 100, 10, 3), (7, 95, 10, 4), (0, 10, 10, 2), (5, 5, 10, 1)]:
        got = sorted(o for i in range(k) for o in stripe_frames(start, end, frame, i, k))
        assert got == list(range(start, end, frame))
    assert list(stripe_frames(0, 100, 10, 1, 3)) == [10, 40, 70]


def test_request_round_trip_and_bounds() -> None:
    req = RangeRequest(b"\x01\x02", "a/b", 5, 9, 1 << 20, 1, 2, ("crc32c", "crc32"))
    back = RangeRequest.from_json(req.to_json())
    assert (back.grant, back.relpath, back.offset, back.end, back.stripe, back.stripes) == (
        b"\x01\x02",
        "a/b",
        5,
        9,
        1,
        2,
    )
    assert back.checks == (choose_check(["crc32c", "crc32"]),)
    base = req.to_json()
    for bad in (
        {"offset": 10},  # past the end
        {"offset": -1},
        {"stripes": 0},
        {"stripe": 2},
        {"stripes": 99},
        {"grant": "zz"},
        {"end": "x"},
    ):
        with pytest.raises(InvalidInput):
            RangeRequest.from_json({**base, **bad})
    with pytest.raises(InvalidInput):
        RangeRequest.from_json([1, 2])
    assert RangeRequest(b"", "", 0, 0, frame=1).frame_size() == MIN_FRAME
    assert RangeRequest(b"", "", 0, 0, frame=1 << 40).frame_size() == MAX_FRAME


def test_checksum_choice_and_error_mapping() -> None:
    assert choose_check(["md5", "crc32"]) == "crc32"
    assert choose_check("crc32c") == "crc32"  # not a list: the always-available one
    assert choose_check(["crc32c"]) == ("crc32c" if "crc32c" in CHECKS else "crc32")
    assert CHECKS["crc32"](memoryview(b"123456789")) == 0xCBF43926
    if "crc32c" in CHECKS:
        assert CHECKS["crc32c"](memoryview(b"123456789")) == 0xE3069283
    err = error_from({"ok": False, "code": "PERMISSION_DENIED", "message": "no"})
    assert isinstance(err, NotPermitted) and str(err) == "no"
    assert type(error_from({"code": "WHATEVER"})) is ZmeshError


def test_digest_sink_checks_the_whole() -> None:
    import hashlib

    sink = DigestSink(6, hashlib.sha256(b"abcdef").hexdigest())
    sink.write(0, b"abc")
    sink.write(3, b"def")
    sink.finish()
    bad = DigestSink(3, hashlib.sha256(b"abc").hexdigest())
    bad.write(0, b"abd")
    with pytest.raises(DataIntegrityError):
        bad.finish()


def test_tls_stream_is_preferred_and_config_keys_are_checked() -> None:
    cfg = AgentConfig(name="a", mesh="m", listen="127.0.0.1:0")
    assert cfg.transfer_methods == [TLS_STREAM, "grpc-stream"]
    assert choose_method(cfg.transfer_methods, [TLS_STREAM, "grpc-stream"]) == TLS_STREAM
    assert choose_method(cfg.transfer_methods, ["grpc-stream"]) == "grpc-stream"
    ok = AgentConfig(
        name="a", mesh="m", listen="127.0.0.1:0", data_ports=[9000, 9010], transfer_streams=4
    )
    assert ok.data_ports == [9000, 9010]
    for bad in (
        {"data_ports": [9010, 9000]},
        {"data_ports": [1, 2, 3]},
        {"data_ports": [0, 10]},
        {"data_ports": [1000, 5000]},
        {"transfer_streams": 0},
        {"transfer_streams": 17},
        {"data_listen": "nohost"},
    ):
        with pytest.raises(InvalidInput):
            AgentConfig(name="a", mesh="m", listen="127.0.0.1:0", **bad)  # type: ignore[arg-type]
