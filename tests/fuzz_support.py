"""What the fuzz tests share: strategies for junk JSON, frames and messages, and a hub in a thread.

Used by tests/hub/test_fuzz_websocket.py, tests/hub/test_fuzz_rest.py and
tests/rpc_client/test_fuzz_dispatcher.py. The strategies build JSON *text*, not
only values, so that they can hold what ``json.dumps`` never writes: ``NaN``,
``1e400``, 10,000-digit integers, lone surrogate escapes, nesting deeper than
any parser allows, truncated and mangled text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from hypothesis import strategies as st

from hub.app import create_app
from hub.component import WorkspaceHub
from hub.settings import HubSettings

T = TypeVar("T")


def examples(n: int) -> int:
    """``n`` examples, times ``FUZZ_SCALE`` (default 1): ``FUZZ_SCALE=20 pytest tests/...fuzz...`` hunts longer."""
    return max(1, round(n * float(os.environ.get("FUZZ_SCALE", "1"))))


TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# --- JSON text, good and bad -----------------------------------------------------------


class Raw(str):
    """JSON text written as it is (``to_text`` does not quote it): the tokens json.dumps never writes."""

    __slots__ = ()


#: Each breaks a frame its own way: not JSON, out of range, too long, too deep, not Unicode.
RAW_TOKENS: tuple[str, ...] = (
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1E+99999",
    "1e-400",
    "9" * 10_000,
    "-" + "9" * 10_000,
    "0." + "1" * 5_000,
    '"\\ud800"',
    '"\\udfff"',
    '"x\\udbff"',
    '"\\ud800\\ud800"',
    '"\\ud83d\\ude00"',  # a valid pair: fine
    "[" * 700 + "]" * 700,  # deep, yet within what Python's parser takes
    "[" * 20_000 + "]" * 20_000,
    '{"a":' * 3_000 + "0" + "}" * 3_000,
    "tru",
    "01",
    "+1",
    ".5",
    "'x'",
    '"\x01"',
    '"\\x41"',
    "[1,]",
    "{,}",
    "",
)

raw_tokens = st.sampled_from(RAW_TOKENS).map(Raw)

#: Scalars of every JSON type, including big integers and floats json.dumps can write.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([0, -1, 2**31, 2**53 + 1, 2**63, -(2**64), 10**300])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
#: A JSON value or, in its place, a raw token.
junk = json_values | raw_tokens
#: Ids of every JSON type (and raw junk): only non-bool integers and strings are ids.
any_ids = (
    st.integers(min_value=-3, max_value=3)
    | st.integers()
    | st.text(max_size=8)
    | st.sampled_from(["1", "0", "", " 1", "1.0"])
    | st.sampled_from([1.0, 1.5, -0.0, True, False, None, [], [1], {}, {"id": 1}])
    | raw_tokens
)


def to_text(value: Any) -> str:
    """JSON text of ``value``, with each :class:`Raw` written verbatim (keys included)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(
                f"{to_text(k) if isinstance(k, Raw) else json.dumps(k)}:{to_text(v)}"
                for k, v in value.items()
            )
            + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(to_text(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


METHODS = (
    "list_files",
    "read_files",
    "search_files",
    "write_file",
    "edit_file",
    "execute_command",
    "read_output",
    "undo",
)
ODD_METHODS = st.sampled_from(
    [
        "$/cancelRequest",
        "command_output_chunk",
        "initialize",
        "rpc.discover",
        "__init__",
        "__class__",
        "$/progress",
        " ",
        "\u202eelif",
        "list_files\x00",
        "a" * 300,
        *METHODS,
    ]
) | st.text(max_size=12)

#: params objects with junk in them, often naming a request id (as the two notifications do).
junk_params = st.fixed_dictionaries(
    {},
    optional={
        "id": any_ids,
        "stream": st.sampled_from(["stdout", "stderr"]) | junk,
        "data": st.text(max_size=10) | junk,
        "path": st.sampled_from(["./", "..", "/etc", "a.txt"]) | junk,
        Raw('"\\udc80"'): junk,
    },
) | st.dictionaries(st.text(max_size=6), junk, max_size=3)


#: JSON-RPC-shaped objects with junk (or the right thing) in every member.
jsonrpc_shapes = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.just("2.0") | junk,
        "id": any_ids,
        "method": ODD_METHODS | junk,
        "params": junk_params | junk,
        "result": junk,
        "error": junk
        | st.fixed_dictionaries(
            {"code": st.integers() | junk, "message": st.text(max_size=8) | junk},
            optional={"data": junk, "extra": junk},
        ),
        "extra": junk,
    },
)
#: Typed-envelope-shaped objects with junk in ``type``, ``request_id`` and ``payload``.
envelope_shapes = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(
            [
                "list_files",
                "list_files_response",
                "command_output",
                "error",
                "initialize",
                "initialize_response",
                "_response",
                "nope_response",
                "$/cancelRequest",
                "command_output_chunk",
                "",
            ]
        )
        | junk,
        "request_id": any_ids,
        "payload": junk_params
        | junk
        | st.fixed_dictionaries(
            {},
            optional={
                "status": st.sampled_from(["success", "error", "ok", ""]) | junk,
                "error_message": st.text(max_size=8) | junk,
                "error_code": st.integers() | junk,
                "id": any_ids,
                "files": junk,
            },
        ),
        "extra": junk,
    },
)


@st.composite
def mangled(draw: st.DrawFn, texts: st.SearchStrategy[str]) -> str:
    """A text with a raw token spliced in somewhere, or cut short."""
    text = draw(texts)
    at = draw(st.integers(min_value=0, max_value=len(text)))
    if draw(st.booleans()):
        return text[:at]
    return text[:at] + draw(raw_tokens) + text[at:]


message_texts = (jsonrpc_shapes | envelope_shapes).map(to_text)
#: Text frames: messages with junk, any JSON value, mangled JSON, any text.
junk_texts = st.one_of(
    message_texts,
    message_texts,
    junk.map(to_text),
    mangled(message_texts),
    st.text(max_size=40),
)


@dataclass(frozen=True)
class Frame:
    """One WebSocket frame: text, binary, or a text frame whose bytes are not UTF-8."""

    kind: str  # "text" | "binary" | "bad-utf8"
    data: str | bytes

    def __repr__(self) -> str:
        shown = self.data if len(self.data) < 300 else self.data[:300]
        return f"Frame({self.kind}, {shown!r}{'...' if len(self.data) >= 300 else ''})"


text_frames = junk_texts.map(lambda t: Frame("text", t))
binary_frames = (st.binary(max_size=40) | junk_texts.map(lambda t: t.encode("utf-8", "surrogatepass"))).map(
    lambda b: Frame("binary", b)
)
#: Bytes no UTF-8 decoder takes (a lone continuation byte, an overlong form, an encoded surrogate...).
BAD_UTF8 = (b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xff", b"\xf4\x90\x80\x80", b"\xe2\x82")
bad_utf8_frames = st.builds(
    lambda text, bad, at: Frame("bad-utf8", text.encode()[:at] + bad + text.encode()[at:]),
    junk_texts,
    st.sampled_from(BAD_UTF8),
    st.integers(min_value=0, max_value=30),
)


# --- a hub on a real uvicorn server, in a thread ----------------------------------------


class ErrorLog(logging.Handler):
    """Collects ERROR records (an exception in the ASGI app, a task's unretrieved exception)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        # A record reaches each watched logger it propagates through: keep it once.
        if not any(seen is record for seen in self.records):
            self.records.append(record)

    def take(self) -> list[str]:
        """The records since the last take. (uvicorn's traceback for a text frame that is not
        UTF-8 is one WARNING line now: hub.component.OneLineFrameErrors.)"""
        taken = [
            f"{r.name}: {r.getMessage()}" + (f" ({r.exc_info[1]!r})" if r.exc_info else "")
            for r in self.records
        ]
        self.records.clear()
        return taken


WATCHED_LOGGERS = ("uvicorn.error", "uvicorn", "asyncio", "aihub.hub", "aihub.client", "jsonrpcserver")


@contextmanager
def watching_errors() -> Iterator[ErrorLog]:
    log = ErrorLog()
    for name in WATCHED_LOGGERS:
        logging.getLogger(name).addHandler(log)
    try:
        yield log
    finally:
        for name in WATCHED_LOGGERS:
            logging.getLogger(name).removeHandler(log)


class ThreadedHub:
    """The real app (``create_app``) on uvicorn at 127.0.0.1:<free port>, its loop in a thread of its own."""

    def __init__(self, home: Path, **settings: Any) -> None:
        self.settings = HubSettings(home=home, token=TOKEN, **settings)
        self.app = create_app(self.settings)
        self.loop = asyncio.new_event_loop()
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            ws_max_size=self.settings.max_frame_bytes,
            ws_ping_interval=self.settings.ping_interval,
            ws_ping_timeout=self.settings.ping_timeout,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve, name="fuzz-hub", daemon=True)
        self.port = 0
        self.baseline_tasks = 0

    @property
    def hub(self) -> WorkspaceHub:
        hub: WorkspaceHub = self.app.state.hub
        return hub

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/workspace"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve())

    def start(self) -> ThreadedHub:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the hub did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.baseline_tasks = self.run(_task_count())
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run a coroutine on the hub's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Until no workspace is connected and the loop runs only the tasks it ran at start."""
        deadline = time.monotonic() + timeout
        while True:
            tasks = self.run(_task_count())
            workspaces = len(self.hub.registry)
            if tasks <= self.baseline_tasks and workspaces == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the hub leaks: {tasks} tasks (at start: {self.baseline_tasks}), {workspaces} workspaces"
                )
            time.sleep(0.005)


async def _task_count() -> int:
    return len(asyncio.all_tasks()) - 1  # not this one


def poll(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True
