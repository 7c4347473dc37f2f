"""Which hubs the client compresses frames to (rpc_client/transport.py)."""

from __future__ import annotations

import pytest

from rpc_client.cli import COMPRESSION, parser
from rpc_client.transport import HubTarget, compresses, is_loopback


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("ws://127.0.0.1:8765/ws/workspace", True),
        ("ws://127.8.9.10/ws", True),
        ("ws://localhost:1/ws", True),
        ("ws://[::1]:8765/ws", True),
        ("wss://hub.example.com/ws/workspace", False),
        ("ws://10.0.0.5:8765/ws", False),
        ("ws://[2001:db8::1]/ws", False),
    ],
)
def test_compression_by_default_only_to_another_host(url: str, loopback: bool) -> None:
    assert is_loopback(url) is loopback
    assert compresses(HubTarget(url, "t", "w")) is not loopback
    assert compresses(HubTarget(url, "t", "w", compress=True)) is True
    assert compresses(HubTarget(url, "t", "w", compress=False)) is False


@pytest.mark.parametrize(
    ("flag", "compress"), [(None, None), ("auto", None), ("deflate", True), ("none", False)]
)
def test_the_compression_flag(flag: str | None, compress: bool | None) -> None:
    args = parser().parse_args([] if flag is None else ["--compression", flag])
    assert COMPRESSION[args.compression] is compress


def test_an_unknown_compression_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        parser().parse_args(["--compression", "gzip"])
    assert refused.value.code == 2 and "--compression" in capsys.readouterr().err
