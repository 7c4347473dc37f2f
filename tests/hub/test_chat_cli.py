"""``aihub chat`` reading a broken event stream: one message, never a traceback."""

from __future__ import annotations

import io

import httpx2
import pytest
from rich.console import Console

from hub.chat_cli import Chat, ChatFailed

START = b'event: start\ndata: {"conversation_id": "c1", "turn": 1, "model": "m"}\n\n'


def show(body: bytes) -> tuple[Chat, str]:
    out = io.StringIO()
    chat = Chat("http://127.0.0.1:9", "token", "w", None, console=Console(file=out, width=80))
    chat._show(httpx2.Response(200, content=body))
    return chat, out.getvalue()


@pytest.mark.parametrize(
    "event",
    [b"event: text\ndata: {nope\n\n", b"event: text\ndata: [1, 2]\n\n", b"data: 5\n\n"],
    ids=["not-json", "a-list", "a-number"],
)
def test_an_event_that_is_not_a_json_object_is_one_message(event: bytes) -> None:
    """It used to end ``aihub chat`` with a traceback (JSONDecodeError, or AttributeError on .get)."""
    with pytest.raises(ChatFailed, match="not a JSON object"):
        show(START + event)


def test_a_stream_that_ends_early_or_fails_is_one_line() -> None:
    with pytest.raises(ChatFailed, match="ended the stream before the turn was done"):
        show(START + b'event: text\ndata: {"delta": "half"}\n\n')
    error = b'event: error\ndata: {"status_code": 502, "detail": "upstream:\\n<html>\\n  bad gateway\\n</html>"}\n\n'
    with pytest.raises(ChatFailed) as failed:
        show(START + error)
    assert failed.value.message == "upstream: <html> bad gateway </html>"
