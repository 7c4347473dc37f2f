"""Fuzzing the client's side of the wire: the frame loop (``transport.serve``) and the dispatcher.

The same junk as tests/hub/test_fuzz_websocket.py (tests/fuzz_support.py), fed to the client
over a real sandbox on a temp project, with a secret and a link pointing outside it:

* ``serve`` never raises; every request with a readable id gets exactly one answer, valid
  JSON-RPC with that id (its JSON type kept); every frame that cannot be read gets one error
  (-32700/-32600/-32602, the id it could read); binary frames -32600; notifications and answers
  nothing; every frame it sends is strict JSON in UTF-8;
* ``dispatch_request``: unknown methods -32601; params of the wrong types or shape -32602 with
  ``data.errors`` naming exactly the fields the tool's model refuses; never -32603 (a bug);
* nothing outside the project (and the client's own state folder) is touched, whatever the paths.

Commands are not run: ``commands.run_command`` is replaced by a recorder, so the command
policy (a bash parser) is fuzzed but no fuzzed text ever reaches a shell.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from rpc_client import commands, transport
from rpc_client.checkpoints import Checkpoints
from rpc_client.dispatcher import METHODS, ClientContext, dispatch, dispatch_request
from rpc_client.files import FileLimits
from rpc_client.policy import CommandPolicy, DangerousMode
from rpc_client.sandbox import Sandbox
from rpc_client.scope import CURRENT, RequestScope
from schemas.errors import ErrorCode
from schemas.framing import Framing, decode_frame
from schemas.jsonrpc import Malformed, Request, parse_message
from schemas.tools import TOOLS, validation_errors
from tests.fuzz_support import (
    ODD_METHODS,
    any_ids,
    binary_frames,
    examples,
    json_values,
    junk,
    junk_params,
    junk_texts,
    to_text,
)
from tests.rpc_client.helpers import NoApprover

pytestmark = pytest.mark.anyio

#: ``untouched`` wraps a whole run of examples (what is outside the project is compared once,
#: before the first and after the last): a function-scoped fixture on purpose.
FUZZ = settings(
    max_examples=examples(100),
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)

# --- the project, and what must not change outside it --------------------------------------


@dataclass
class Project:
    tmp: Path
    root: Path
    state: Path
    sandbox: Sandbox
    commands_run: list[tuple[str, Path]] = field(default_factory=list)

    def context(self, *, read_only: bool = False) -> ClientContext:
        return ClientContext(
            sandbox=self.sandbox,
            policy=CommandPolicy(DangerousMode.DENY, read_only=read_only, approver=NoApprover()),
            limits=FileLimits(max_file_bytes=64 * 1024, max_answer_bytes=256 * 1024, search_seconds=2.0),
            checkpoints=Checkpoints(self.state),
            outputs=self.state / "outputs",
            report=lambda _line: None,
        )

    def outside(self) -> dict[str, tuple[int, int, str]]:
        """Every file, folder and link outside the root and the state folder: mode, size, content hash."""
        seen: dict[str, tuple[int, int, str]] = {}
        for folder, dirs, files in os.walk(self.tmp, followlinks=False):
            here = Path(folder)
            if here == self.root or here == self.state:
                dirs.clear()
                continue
            for name in dirs + files:
                path = here / name
                if path in (self.root, self.state):
                    continue
                info = path.lstat()
                digest = ""
                if path.is_symlink():
                    digest = os.readlink(path)
                elif path.is_file():
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                seen[str(path.relative_to(self.tmp))] = (info.st_mode, info.st_size, digest)
        return seen


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    tmp = tmp_path_factory.mktemp("fuzz-client")
    root, state, outside = tmp / "root", tmp / "state", tmp / "outside"
    for folder in (root / "sub", root / ".git", state, outside):
        folder.mkdir(parents=True)
    (root / "a.txt").write_text("alpha\nbeta\n")
    (root / "sub" / "b.txt").write_text("gamma\n")
    (root / ".env").write_text("TOKEN=hidden\n")
    (root / ".git" / "config").write_text("[core]\n")
    (root / "bin.dat").write_bytes(b"\xff\xfe\x00binary")
    (outside / "secret").write_text("s3cret\n")
    (root / "link_out").symlink_to(outside / "secret")
    (root / "dir_out").symlink_to(outside)
    (tmp / "sibling.txt").write_text("next to the root\n")
    with Sandbox(root) as sandbox, pytest.MonkeyPatch.context() as patch:
        found = Project(tmp, root, state, sandbox)

        async def run_command(command: str, *, cwd: Path, **_kwargs: Any) -> dict[str, Any]:
            found.commands_run.append((command, cwd))
            return {"stdout": "", "stderr": "", "exit_code": 0, "duration_ms": 0.1}

        patch.setattr(commands, "run_command", run_command)
        yield found


@pytest.fixture
def untouched(project: Project) -> Iterator[None]:
    before = project.outside()
    yield
    assert project.outside() == before
    assert all(cwd == project.root for _command, cwd in project.commands_run)


# --- params: junk, and near-misses of each tool's own ----------------------------------------

paths = st.sampled_from(
    [
        "a.txt",
        "sub/b.txt",
        "sub/",
        "./",
        ".",
        "..",
        "../outside/secret",
        "../sibling.txt",
        "sub/../../sibling.txt",
        "/etc/passwd",
        "link_out",
        "dir_out/secret",
        "dir_out/new.txt",
        ".env",
        ".git/config",
        "new/deep/file.txt",
        "a\x00b",
        "",
        "x" * 5000,
        "~/.ssh/id_rsa",
        "bin.dat",
        "C:\\Windows",
    ]
) | st.text(max_size=12)
maybe_junk = junk | st.sampled_from([None, True, 1, 1.0, "1", [], {}])


def mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value of the right type three times in four, else junk."""
    # Hypothesis leans to small integers: junk is the largest one.
    return st.integers(0, 3).flatmap(lambda n: maybe_junk if n == 3 else good)


#: Params each tool might be given: the right names, values of the right type or not.
tool_params = {
    "list_files": st.fixed_dictionaries(
        {},
        optional={
            "path": mostly(paths),
            "recursive": mostly(st.booleans()),
            "respect_gitignore": mostly(st.sampled_from([None, True, False])),
            "max_entries": mostly(st.integers(-2, 100_001)),
        },
    ),
    "read_files": st.fixed_dictionaries(
        {"files": mostly(st.lists(paths, max_size=4))},
        optional={
            "encoding": mostly(st.sampled_from(["text", "base64", "utf-16"])),
            "offset": mostly(st.integers(-1, 5)),
            "limit": mostly(st.integers(-1, 5)),
        },
    ),
    "search_files": st.fixed_dictionaries(
        {
            "pattern": mostly(
                st.sampled_from(["a", "(", "a{99999}", "\\", "(?P<x>", ".*"]) | st.text(max_size=8)
            )
        },
        optional={
            "path": mostly(paths),
            "glob": mostly(st.sampled_from(["*.txt", "**", "[", "../*"])),
            "literal": mostly(st.booleans()),
            "case_sensitive": mostly(st.booleans()),
            "max_results": mostly(st.integers(-1, 10)),
        },
    ),
    "write_file": st.fixed_dictionaries(
        {"path": mostly(paths), "content": mostly(st.text(max_size=20))},
        optional={"expected_sha256": mostly(st.sampled_from(["0" * 64, "A" * 64, "x"]))},
    ),
    "edit_file": st.fixed_dictionaries(
        {
            "path": mostly(paths),
            "old_string": mostly(st.sampled_from(["alpha", "", "a"]) | st.text(max_size=5)),
            "new_string": mostly(st.text(max_size=5)),
        },
        optional={
            "replace_all": mostly(st.booleans()),
            "expected_sha256": mostly(st.sampled_from(["0" * 64])),
        },
    ),
    "execute_command": st.fixed_dictionaries(
        {
            "command": mostly(
                st.sampled_from(
                    ["ls", "rm -rf /", "cat ../outside/secret", "cat .env", "echo $((", "sudo x", ""]
                )
                | st.text(max_size=20)
            )
        },
        optional={"timeout": mostly(st.sampled_from([0, -1, 0.5, 3600, 3601, 1e308]))},
    ),
    "read_output": st.fixed_dictionaries(
        {"output_id": mostly(st.sampled_from(["0123456789abcdef", "../../etc/passwd", ""]))},
        optional={
            "stream": mostly(st.sampled_from(["stdout", "stderr", "both"])),
            "offset": mostly(st.integers(-1, 10)),
            "limit": mostly(st.integers(-1, 2_000_000)),
        },
    ),
    "undo": st.fixed_dictionaries({}, optional={"checkpoint": mostly(st.integers(-1, 3) | st.none())}),
}


def _no_ctx(params: dict[str, Any]) -> bool:
    # A param named "ctx" is a known bug (see test_a_param_named_ctx_gets_field_errors_like_any_unknown_param).
    return "ctx" not in params


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, Any] | None]:
    """(method, params): mostly a tool's own method with params near its own, sometimes anything."""
    method = draw(
        ODD_METHODS.filter(bool) if draw(st.integers(0, 4)) == 4 else st.sampled_from(sorted(METHODS))
    )
    if method in tool_params and draw(st.integers(0, 5)) < 5:
        params: dict[str, Any] | None = draw(tool_params[method])
    else:
        params = draw(st.none() | junk_params.filter(_no_ctx))
    if params is not None and draw(st.integers(0, 5)) == 5:
        params = {**params, draw(st.sampled_from(["extra", "mode", "ctx ", "self", "params"])): draw(junk)}
    return method, params


def _not_json(name: str) -> Any:
    raise AssertionError(f"the client wrote {name}, which is not JSON")


def strict(text: str | bytes) -> Any:
    """A frame the client sent, as JSON: UTF-8 (no lone surrogate), no NaN or Infinity."""
    data = text if isinstance(text, bytes) else text.encode("utf-8")
    return json.loads(data.decode("utf-8"), parse_constant=_not_json)


def checked_answer(text: str | bytes, request_id: object) -> dict[str, Any]:
    """A valid JSON-RPC answer to ``request_id`` (with its JSON type)."""
    answer = strict(text)
    assert isinstance(answer, dict) and answer.get("jsonrpc") == "2.0", answer
    assert type(answer["id"]) is type(request_id) and answer["id"] == request_id, (answer, request_id)
    assert ("result" in answer) != ("error" in answer), answer
    assert set(answer) <= {"jsonrpc", "id", "result", "error"}, answer
    if "error" in answer:
        error = answer["error"]
        assert isinstance(error["code"], int) and isinstance(error["message"], str), answer
        assert set(error) <= {"code", "message", "data"}, answer
    return answer


# --- dispatch_request -------------------------------------------------------------------------


#: What the project keeps from the AI: a file outside the root (behind links) and a hidden .env.
SECRETS = ("s3cret", "TOKEN=hidden")


@FUZZ
@given(request=requests(), request_id=st.integers() | st.text(max_size=6), read_only=st.booleans())
async def test_every_request_gets_one_answer_with_its_id_and_the_errors_the_protocol_names(
    project: Project,
    untouched: None,
    request: tuple[str, dict[str, Any] | None],
    request_id: int | str,
    read_only: bool,
) -> None:
    method, params = request
    message = parse_message({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
    assert isinstance(message, Request)
    text = await dispatch_request(project.context(read_only=read_only), message)
    assert not any(secret in text for secret in SECRETS), text
    answer = checked_answer(text, request_id)
    error = answer.get("error")
    event(f"{method if method in METHODS else 'other'}: {error['code'] if error else 'success'}")
    if method not in METHODS:
        assert error is not None and error["code"] == ErrorCode.METHOD_NOT_FOUND, answer
        return
    assert error is None or error["code"] != ErrorCode.INTERNAL_ERROR, answer  # a bug in the client
    try:
        TOOLS[method].params.model_validate(params or {})
    except ValidationError as exc:
        assert error is not None and error["code"] == ErrorCode.INVALID_PARAMS, answer
        assert error["data"]["errors"] == validation_errors(exc)
        assert {tuple(e["loc"]) for e in error["data"]["errors"]}, answer
    else:
        # Params of the right types may still be refused -32602 where docs/protocol.md says so, with a
        # message and no field errors: a pattern or glob RE2 does not take, an edit that changes nothing.
        if error is not None and error["code"] == ErrorCode.INVALID_PARAMS:
            assert method in ("search_files", "edit_file") and not error.get("data"), answer


async def test_the_fuzzed_paths_never_leave_the_project(project: Project, untouched: None) -> None:
    """The paths above, one by one through every file tool, in a read-write client."""
    ctx = project.context()
    for path in (
        "../sibling.txt",
        "link_out",
        "dir_out/new.txt",
        "dir_out/secret",
        "/etc/passwd",
        "sub/../../x",
    ):
        for method, params in (
            ("write_file", {"path": path, "content": "pwned"}),
            ("edit_file", {"path": path, "old_string": "s3cret", "new_string": "pwned"}),
            ("read_files", {"files": [path]}),
            ("list_files", {"path": path}),
        ):
            message = parse_message({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
            assert isinstance(message, Request)
            text = await dispatch_request(ctx, message)
            answer = checked_answer(text, 1)
            assert "error" in answer and not any(s in text for s in SECRETS), (method, path, answer)


async def test_a_param_named_ctx_gets_field_errors_like_any_unknown_param(project: Project) -> None:
    message = parse_message({"jsonrpc": "2.0", "id": 1, "method": "list_files", "params": {"ctx": 1}})
    assert isinstance(message, Request)
    error = checked_answer(await dispatch_request(project.context(), message), 1)["error"]
    assert error["code"] == ErrorCode.INVALID_PARAMS
    assert error["data"] == {
        "errors": [{"loc": ["ctx"], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}]
    }


async def test_commands_whose_timeout_runs_out_before_they_start_leave_no_command_slot_taken(
    project: Project,
) -> None:
    ctx = project.context()

    async def notify(method: str, params: dict[str, Any]) -> None:
        pass

    for n in range(200):  # timeouts from 1 ms down to 0.1 µs: some run out while the call waits for a slot
        timeout = 10 ** -(3 + (n % 40) / 10)
        CURRENT.set(RequestScope(n, notify))  # as serve runs each request
        await dispatch_request(
            ctx, Request(id=n, method="execute_command", params={"command": "true", "timeout": timeout})
        )
    await asyncio.sleep(0.05)
    CURRENT.set(RequestScope(1000, notify))
    answer = checked_answer(
        await dispatch_request(
            ctx, Request(id=1000, method="execute_command", params={"command": "true", "timeout": 1})
        ),
        1000,
    )
    assert "result" in answer, answer


# --- dispatch (JSON-RPC text in, text out) -----------------------------------------------------


@FUZZ
@given(text=junk_texts)
async def test_dispatch_never_raises_and_answers_in_json_rpc(
    project: Project, untouched: None, text: str
) -> None:
    answer = await dispatch(project.context(), text)
    if answer == "":
        return  # a notification
    value = json.loads(answer)  # jsonrpcserver parses with json.loads: its NaN ids are the next test's
    assert isinstance(value, dict | list), value
    for one in value if isinstance(value, list) else [value]:
        assert one["jsonrpc"] == "2.0" and ("result" in one) != ("error" in one), one


@pytest.mark.parametrize("raw_id", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_dispatch_answers_an_unreadable_id_with_strict_json(project: Project, raw_id: str) -> None:
    answer = await dispatch(
        project.context(), f'{{"jsonrpc": "2.0", "id": {raw_id}, "method": "list_files"}}'
    )
    value = strict(answer)
    assert value["id"] is None and value["error"]["code"] in (
        ErrorCode.PARSE_ERROR,
        ErrorCode.INVALID_REQUEST,
    )


# --- serve: the frame loop ---------------------------------------------------------------------


class FakeHub:
    """What ``serve`` needs of a connection: the frames to read, and ``send``.

    After the last frame it waits until ``answered(sent)`` (the loop cancels requests
    still running when the connection ends), then a moment for an answer too many, then
    ends the iteration: the connection is gone.
    """

    def __init__(self, frames: list[str | bytes], answered: Callable[[list[Any]], bool]) -> None:
        self.frames = frames
        self.answered = answered
        self.sent: list[str | bytes] = []
        self.more = asyncio.Event()

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._read()

    async def _read(self) -> AsyncIterator[str | bytes]:
        for frame in self.frames:
            yield frame
        try:
            async with asyncio.timeout(5):
                while not self.answered([strict(s) for s in self.sent]):
                    self.more.clear()
                    await self.more.wait()
        except TimeoutError:
            raise AssertionError(
                f"not all answered within 5 s; frames: {self.frames}; sent: {self.sent}"
            ) from None
        await asyncio.sleep(0.01)

    async def send(self, data: str | bytes, text: bool | None = None) -> None:
        self.sent.append(data)
        self.more.set()


def _key(value: object) -> tuple[str, str]:
    return (type(value).__name__, repr(value))


request_texts = st.builds(
    lambda request, request_id: to_text(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": request[0],
            **({"params": request[1]} if request[1] is not None else {}),
        }
    ),
    requests(),
    st.integers(-2, 5) | st.text(max_size=4) | any_ids,  # a readable id two times in three
)
notification_texts = st.builds(
    lambda method, params: to_text({"jsonrpc": "2.0", "method": method, "params": params}),
    st.sampled_from(["$/cancelRequest", "command_output_chunk"]) | ODD_METHODS,
    junk_params,
)
answer_texts = st.builds(
    lambda request_id, result: to_text({"jsonrpc": "2.0", "id": request_id, "result": result}),
    any_ids,
    json_values,
)


@st.composite
def serve_frames(draw: st.DrawFn) -> list[str | bytes]:
    """Requests (one of them sometimes sent twice: the same id), mixed in with junk of every kind."""
    frames: list[str | bytes] = list(draw(st.lists(request_texts, min_size=1, max_size=4)))
    if draw(st.booleans()):
        frames.append(frames[0])
    frames += draw(
        st.lists(
            st.one_of(notification_texts, answer_texts, junk_texts, binary_frames.map(lambda f: f.data)),
            max_size=4,
        )
    )
    return list(draw(st.permutations(frames)))


@FUZZ
@given(frames=serve_frames())
async def test_serve_answers_every_readable_request_once_and_every_unreadable_frame_once(
    project: Project, untouched: None, frames: list[str | bytes]
) -> None:
    """Exactly one error per unreadable frame; at least one answer per request id, and more only as
    replays of the same answer (a repeated id is never run twice: rpc_client/ledger.py)."""
    errors: Counter[tuple[tuple[str, str], int]] = Counter()
    requests_in: Counter[tuple[str, str]] = Counter()
    for frame in frames:
        if isinstance(frame, bytes):
            errors[(_key(None), ErrorCode.INVALID_REQUEST)] += 1
            continue
        message = decode_frame(frame, Framing.JSONRPC)
        event(f"frame: {type(message).__name__}")
        if isinstance(message, Malformed):
            errors[(_key(message.id), message.code)] += 1
        elif isinstance(message, Request):
            requests_in[_key(message.id)] += 1

    def answered(sent: list[Any]) -> bool:
        keys = Counter(_key(s.get("id")) for s in sent)
        return len(sent) >= sum(errors.values()) + len(requests_in) and all(keys[k] for k in requests_in)

    hub = FakeHub(frames, answered)
    await transport.serve(cast(Any, hub), project.context())  # never raises

    left = errors.copy()
    answers: dict[tuple[str, str], list[str | bytes]] = {}
    for sent in hub.sent:
        assert not any(
            secret.encode() in (sent if isinstance(sent, bytes) else sent.encode()) for secret in SECRETS
        )
        value = strict(sent)
        assert "id" in value, f"a notification nobody asked for: {value}"
        answer = checked_answer(sent, value["id"])
        key, code = _key(answer["id"]), answer.get("error", {}).get("code")
        event(f"answer: {code or 'success'}")
        if left[(key, code)] > 0:
            left[(key, code)] -= 1
        else:
            assert key in requests_in, f"an answer to nothing: {answer}"
            answers.setdefault(key, []).append(sent)
    assert +left == Counter(), left
    assert set(answers) == set(requests_in), (answers, requests_in)
    for key, sent in answers.items():
        assert 1 <= len(sent) <= requests_in[key] and len(set(sent)) == 1, (key, sent)


async def test_serve_survives_the_frames_that_once_crashed_the_decoder(project: Project) -> None:
    frames: list[str | bytes] = [
        "[NaN,",
        '{"jsonrpc":"2.0","id":3,"method":"list_files","params":{"path":NaN}}',
        '{"jsonrpc":"2.0","id":4,"method":"list_files","params":{"max_entries":1e400}}',
        '{"jsonrpc":"2.0","id":5,"method":"list_files","params":{}}',
    ]
    hub = FakeHub(frames, lambda sent: len(sent) >= 4)
    await transport.serve(cast(Any, hub), project.context())
    answers = [strict(s) for s in hub.sent]
    assert [(a["id"], a.get("error", {}).get("code")) for a in answers] == [
        (None, ErrorCode.PARSE_ERROR),
        (3, ErrorCode.PARSE_ERROR),
        (4, ErrorCode.PARSE_ERROR),
        (5, None),
    ]
