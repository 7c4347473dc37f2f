"""read_files with offset and limit: pages of lines, total_lines, and files larger than a whole read allows."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpc_client import files
from rpc_client.dispatcher import ClientContext
from rpc_client.files import FileLimits
from rpc_client.policy import CommandPolicy, DangerousMode
from rpc_client.sandbox import FileReader, Sandbox
from schemas.errors import ErrorCode, RpcError
from schemas.tools import ReadFilesParams
from tests.rpc_client.helpers import NoApprover, call

pytestmark = pytest.mark.anyio


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "ten.txt").write_text("".join(f"line {i}\n" for i in range(1, 11)))
    (root / "crlf.txt").write_bytes(b"a\r\nb\r\nc")
    (root / "empty.txt").write_bytes(b"")
    (root / ".env").write_text("KEY=s3cret\n")
    return root


def make_ctx(root: Path, limits: FileLimits) -> Iterator[ClientContext]:
    with Sandbox(root) as sandbox:
        yield ClientContext(
            sandbox=sandbox,
            policy=CommandPolicy(DangerousMode.DENY, read_only=False, approver=NoApprover()),
            limits=limits,
            report=lambda line: None,
        )


@pytest.fixture
def ctx(root: Path) -> Iterator[ClientContext]:
    # Small caps, so "larger than a whole read" is cheap to build.
    yield from make_ctx(
        root, FileLimits(max_file_bytes=1000, max_answer_bytes=3000, max_ranged_file_bytes=200_000)
    )


async def read(ctx: ClientContext, **params: Any) -> dict[str, Any]:
    return await call(ctx, "read_files", params)


async def test_a_page_of_lines_and_the_whole_files_digest_and_line_count(
    ctx: ClientContext, root: Path
) -> None:
    result = (await read(ctx, files=["ten.txt"], offset=3, limit=2))["result"]
    assert result["files"] == {"ten.txt": "line 3\nline 4\n"}
    assert result["total_lines"] == {"ten.txt": 10}
    assert result["sha256"] == {"ten.txt": hashlib.sha256((root / "ten.txt").read_bytes()).hexdigest()}


async def test_offset_alone_reads_to_the_end_and_limit_alone_from_the_start(ctx: ClientContext) -> None:
    assert (await read(ctx, files=["ten.txt"], offset=9))["result"]["files"]["ten.txt"] == "line 9\nline 10\n"
    assert (await read(ctx, files=["ten.txt"], limit=1))["result"]["files"]["ten.txt"] == "line 1\n"


async def test_past_the_end_is_empty_and_says_how_many_lines_there_are(ctx: ClientContext) -> None:
    result = (await read(ctx, files=["ten.txt", "empty.txt"], offset=50, limit=5))["result"]
    assert result["files"] == {"ten.txt": "", "empty.txt": ""}
    assert result["total_lines"] == {"ten.txt": 10, "empty.txt": 0}


async def test_line_endings_are_kept_and_a_last_line_without_newline_counts(ctx: ClientContext) -> None:
    result = (await read(ctx, files=["crlf.txt"], offset=2, limit=5))["result"]
    assert result["files"] == {"crlf.txt": "b\r\nc"}
    assert result["total_lines"] == {"crlf.txt": 3}


async def test_whole_reads_keep_the_original_answer_and_add_total_lines(ctx: ClientContext) -> None:
    result = (await read(ctx, files=["ten.txt", "crlf.txt"]))["result"]
    assert result["files"]["crlf.txt"] == "a\r\nb\r\nc"
    assert set(result) == {"files", "sha256", "total_lines"}
    assert result["total_lines"] == {"ten.txt": 10, "crlf.txt": 3}


async def test_a_file_over_the_whole_read_cap_is_read_in_pages(ctx: ClientContext, root: Path) -> None:
    big = "".join(f"{i:05d} {'x' * 20}\n" for i in range(5000))  # ~135 KB, over the 1000-byte whole read
    (root / "big.log").write_text(big)
    whole = (await read(ctx, files=["big.log"]))["error"]
    assert whole["code"] == ErrorCode.PARTIAL_FAILURE
    assert "offset and limit" in whole["data"]["errors"]["big.log"]
    page = (await read(ctx, files=["big.log"], offset=4001, limit=3))["result"]
    assert page["files"]["big.log"] == "".join(f"{i:05d} {'x' * 20}\n" for i in range(4000, 4003))
    assert page["total_lines"]["big.log"] == 5000
    assert page["sha256"]["big.log"] == hashlib.sha256(big.encode()).hexdigest()


async def test_a_page_that_does_not_fit_the_answer_is_refused_with_advice(
    ctx: ClientContext, root: Path
) -> None:
    (root / "wide.txt").write_text("".join("y" * 100 + "\n" for _ in range(100)))
    error = (await read(ctx, files=["wide.txt"], offset=1))["error"]
    assert error["code"] == ErrorCode.PARTIAL_FAILURE
    assert "limit" in error["data"]["errors"]["wide.txt"]
    assert (await read(ctx, files=["wide.txt"], offset=1, limit=10))["result"]["total_lines"][
        "wide.txt"
    ] == 100


async def test_over_the_ranged_cap_is_too_large(ctx: ClientContext, root: Path) -> None:
    (root / "huge.bin").write_bytes(b"z\n" * 150_000)
    error = (await read(ctx, files=["huge.bin"], offset=1, limit=1))["error"]
    assert "too large" in error["data"]["errors"]["huge.bin"]


async def test_ranged_reads_refuse_what_whole_reads_refuse(
    ctx: ClientContext, root: Path, tmp_path: Path
) -> None:
    (tmp_path / "outside.txt").write_text("outside\n")
    (root / "link").symlink_to(tmp_path / "outside.txt")
    (root / "alias").symlink_to(".env")
    error = (await read(ctx, files=[".env", "alias", "../outside.txt", "link", "nope"], offset=1, limit=1))[
        "error"
    ]
    errors = error["data"]["errors"]
    assert set(errors) == {".env", "alias", "../outside.txt", "link", "nope"}
    assert "hidden" in errors[".env"] and "hidden" in errors["alias"]
    assert "outside" in errors["link"]
    assert "s3cret" not in str(error) and "outside\\n" not in str(error)


async def test_a_fifo_never_hangs_a_ranged_read(ctx: ClientContext, root: Path) -> None:
    import os

    os.mkfifo(root / "pipe")
    error = (await read(ctx, files=["pipe"], offset=1, limit=1))["error"]
    assert "not a regular file" in error["data"]["errors"]["pipe"]


async def test_base64_pages_are_the_bytes_of_those_lines(ctx: ClientContext, root: Path) -> None:
    (root / "bin").write_bytes(b"\x00\x01\n\xff\xfe\n")
    result = (await read(ctx, files=["bin"], offset=2, limit=1, encoding="base64"))["result"]
    assert result["files"]["bin"] == "//4K"
    text_error = (await read(ctx, files=["bin"], offset=2, limit=1))["error"]
    assert "base64" in text_error["data"]["errors"]["bin"]


@given(
    data=st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\r\n", b"\xc3\xa9", b"\n\n"]), max_size=60).map(
        b"".join
    ),
    offset=st.integers(1, 30),
    limit=st.none() | st.integers(1, 30),
    pages=st.lists(st.tuples(st.integers(1, 30), st.none() | st.integers(1, 30)), max_size=4),
    chunk=st.integers(1, 7),
)
def test_pages_read_in_any_chunking_are_the_lines_of_the_file(
    tmp_path_factory: pytest.TempPathFactory,
    data: bytes,
    offset: int,
    limit: int | None,
    pages: list[tuple[int, int | None]],
    chunk: int,
) -> None:
    """The first page streams the file (and indexes it); the later ones read only their bytes."""
    root = tmp_path_factory.mktemp("pages")
    (root / "f").write_bytes(data)
    lines = _lines(data)  # only "\n" ends a line (bytes.splitlines would split at "\r" too)
    original = FileReader.chunks
    files._LINE_INDEX.clear()
    try:  # every chunk boundary: a line split across chunks, a window starting or ending at one
        FileReader.chunks = lambda self, chunk_bytes=chunk: original(self, chunk)  # type: ignore[method-assign]
        with Sandbox(root) as sandbox:
            for first, count in [(offset, limit), *pages]:
                want = b"".join(lines[first - 1 : None if count is None else first - 1 + count])
                got, digest, total = files._read_lines(
                    sandbox, "f", first, count, max_file_bytes=10_000, budget=10_000, guard=None
                )
                assert got == want, (first, count)
                assert total == len(lines) == files.count_lines(data)
                assert digest == hashlib.sha256(data).hexdigest()
                assert len(files._LINE_INDEX) == 1
    finally:
        FileReader.chunks = original  # type: ignore[method-assign]


def _lines(data: bytes) -> list[bytes]:
    parts = data.split(b"\n")
    return [p + b"\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


async def test_a_file_over_the_default_8_mib_cap_is_read_in_pages(root: Path) -> None:
    line = "x" * 99 + "\n"
    (root / "big.txt").write_text(line * 90_000 + "the end\n")  # ~9 MB
    for ctx in make_ctx(root, FileLimits()):
        whole = (await read(ctx, files=["big.txt"]))["error"]
        assert "offset and limit" in whole["data"]["errors"]["big.txt"]
        page = (await read(ctx, files=["big.txt"], offset=90_001, limit=10))["result"]
        assert page["files"]["big.txt"] == "the end\n" and page["total_lines"]["big.txt"] == 90_001


def test_paging_a_large_file_twice_answers_the_same_from_the_line_index(tmp_path: Path) -> None:
    """The second pass starts each page near its first line (the index of a first pass), same answers."""
    root = tmp_path / "paged"
    root.mkdir()
    # Lines of varied length, some longer than a 1 MiB chunk, so chunks start mid-line.
    lines = [("x" * (i % 7000)) + f" line {i}\n" for i in range(3000)]
    lines[1500] = "y" * (3 * 1024 * 1024) + "\n"
    (root / "big.txt").write_text("".join(lines))
    files._LINE_INDEX.clear()
    with Sandbox(root) as sb:

        def page(offset: int, limit: int) -> tuple[str, str, int]:
            result = files.read_files(
                sb, ReadFilesParams(files=["big.txt"], offset=offset, limit=limit), files.FileLimits()
            )
            return result["files"]["big.txt"], result["sha256"]["big.txt"], result["total_lines"]["big.txt"]

        spots = [(1, 3), (700, 5), (1499, 3), (1501, 2), (2999, 5), (3001, 1)]
        first = [page(o, n) for o, n in spots]
        assert len(files._LINE_INDEX) == 1
        second = [page(o, n) for o, n in spots]
    assert first == second
    assert first[0][0] == "".join(lines[0:3]) and first[2][0] == "".join(lines[1498:1501])
    assert first[3][0] == "".join(lines[1500:1502]) and first[5][0] == ""
    assert first[0][2] == 3000


@given(
    data=st.lists(st.sampled_from([b"\n", b"a", b"bcd" * 50, b"\n" * 40]), max_size=400).map(b"".join),
    start=st.integers(0, 20_000),
    n=st.integers(1, 3_000),
)
def test_after_newlines_finds_the_nth_newline(data: bytes, start: int, n: int) -> None:
    """The halving by counts (many newlines in a large span) lands where stepping line by line does."""
    start = min(start, len(data))
    positions = [i + 1 for i in range(start, len(data)) if data[i] == 10]
    if len(positions) < n:
        with pytest.raises(ValueError):
            files._after_newlines(data, start, n)
    else:
        assert files._after_newlines(data, start, n) == positions[n - 1]


def test_a_paged_file_changed_behind_the_index_is_read_afresh(tmp_path: Path) -> None:
    """The same size and mtime, other lines: the ctime (which no one can set back) tells the file changed."""
    root = tmp_path / "p"
    root.mkdir()
    big = root / "f.txt"
    big.write_bytes(b"".join(b"%07d\n" % i for i in range(400_000)))  # 3.2 MB: chunks of 1 MiB
    files._LINE_INDEX.clear()
    with Sandbox(root) as sb:

        def page(first: int, count: int) -> bytes:
            return files._read_lines(
                sb, "f.txt", first, count, max_file_bytes=1 << 30, budget=1 << 30, guard=None
            )[0]

        assert page(200_000, 2) == b"0199999\n0200000\n"
        stat = big.stat()
        # The same size and mtime, but every line now 7 characters longer and fewer of them.
        big.write_bytes(b"".join(b"%014d\n" % i for i in range(200_000)) + b"\n" * 200_000)
        os.utime(big, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert big.stat().st_size == stat.st_size
        assert (
            page(150_000, 2) == b"00000000149999\n00000000150000\n"
        )  # the index would say line 150,000 is elsewhere
        assert page(350_000, 1) == b"\n"


def test_a_page_known_too_large_is_refused_before_its_bytes_are_read(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "f.txt").write_bytes(b"x" * 99 + b"\n" * 1 + (b"y" * 99 + b"\n") * 60_000)  # 6 MB
    files._LINE_INDEX.clear()
    read: list[int] = []
    with Sandbox(root) as sb:
        files._read_lines(sb, "f.txt", 1, 1, max_file_bytes=1 << 30, budget=1 << 30, guard=None)  # indexed
        with pytest.raises(RpcError, match="do not fit"):
            files._read_lines(
                sb,
                "f.txt",
                2,
                50_000,
                max_file_bytes=1 << 30,
                budget=1 << 20,
                guard=None,
                streamed=read.append,
            )
    assert read == []


def test_a_page_whose_bytes_lost_their_lines_is_read_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where times are too coarse to tell a rewrite: the newlines the index expects are gone, so it streams."""
    root = tmp_path / "p"
    root.mkdir()
    big = root / "f.txt"
    big.write_bytes(b"".join(b"%07d\n" % i for i in range(400_000)))
    monkeypatch.setattr(FileReader, "identity", lambda self: (0, 0, 0, 0, 0))
    files._LINE_INDEX.clear()
    with Sandbox(root) as sb:

        def page(first: int, count: int) -> tuple[bytes, str, int]:
            return files._read_lines(
                sb, "f.txt", first, count, max_file_bytes=1 << 30, budget=1 << 30, guard=None
            )

        assert page(200_000, 1)[0] == b"0199999\n"
        big.write_bytes(b"z" * (3_200_000 - 1) + b"\n")
        data, digest, total = page(200_000, 1)
    assert (data, total) == (b"", 1)
    assert digest == hashlib.sha256(big.read_bytes()).hexdigest()


# Where times are too coarse to tell an in-place rewrite of the same size (kernels before 6.13,
# FAT, SMB, NFS), and when two threads page the same file: found by a review of the line index.
STALE = b"".join(
    b"%07d\n" % i for i in range(400_000)
)  # 3.2 MB, 8-byte lines: chunks of 1 MiB start at lines
# 1, 131073, 262145, 393217


@pytest.fixture
def same_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a coarse clock gives: a rewrite of the same size in the same tick keeps the identity."""
    monkeypatch.setattr(FileReader, "identity", lambda self: (0, 0, 0, 0, 0))
    files._LINE_INDEX.clear()


def test_a_stale_index_never_answers_more_lines_than_asked(tmp_path: Path, same_identity: None) -> None:
    big = tmp_path / "f.txt"
    big.write_bytes(STALE)
    with Sandbox(tmp_path) as sb:

        def page(first: int, count: int) -> bytes:
            return files._read_lines(
                sb, "f.txt", first, count, max_file_bytes=1 << 30, budget=1 << 30, guard=None
            )[0]

        assert page(1, 1) == b"0000000\n"  # indexed
        b = b"".join(b"%03d\n" % (i % 1000) for i in range(800_000))  # same size, 4-byte lines
        assert len(b) == len(STALE)
        big.write_bytes(b)
        got = page(131_072, 2)
    # Either the lines 131072-131073 of the file as it is now, or at least two lines: the page
    # spans a chunk boundary and the index is trusted for where chunk 1 starts.
    newlines = got.count(b"\n")
    assert newlines == 2, f"asked 2 lines, got {newlines} ({len(got)} bytes)"
    assert got == b"".join(b.splitlines(keepends=True)[131_071:131_073])


def test_a_stale_index_page_never_goes_over_the_answer_budget(tmp_path: Path, same_identity: None) -> None:
    big = tmp_path / "f.txt"
    big.write_bytes(STALE)
    first = 300_001  # in the chunk at 2 MiB (line 262145): 37856 newlines after its start
    start = 2 * 1024 * 1024
    head = b"a" * start + b"\n" * (300_001 - 262_145)
    rest = len(STALE) - len(head)
    # 100000 lines asked (300001 to 400000): as many escaped bytes, but 99999 of them control
    # characters (6 bytes each in JSON) and a single newline.
    b = head + b"\x01" * 99_999 + b"a" * (rest - 100_000) + b"\n"
    assert len(b) == len(STALE)
    params = ReadFilesParams(files=["f.txt"], offset=first)
    with Sandbox(tmp_path) as sb:
        files.read_files(sb, ReadFilesParams(files=["f.txt"], offset=1, limit=1), FileLimits())  # indexed
        big.write_bytes(b)
        content = b[len(head) :].decode()
        # 300 kB short of the true size: the estimate counts the control characters as newlines.
        budget = files._json_size(content) + files._json_size("f.txt") - 300_000
        try:
            got = files.read_files(sb, params, FileLimits(max_answer_bytes=budget))
        except RpcError:
            return  # refused: the budget held
    size = files._json_size(got["files"]["f.txt"]) + files._json_size("f.txt")
    assert size <= budget, f"answer of {size} bytes for a budget of {budget}"


def test_two_threads_paging_a_changed_file_both_answer(tmp_path: Path, same_identity: None) -> None:
    big = tmp_path / "f.txt"
    big.write_bytes(STALE)
    with Sandbox(tmp_path) as sb:
        files._read_lines(sb, "f.txt", 1, 1, max_file_bytes=1 << 30, budget=1 << 30, guard=None)  # indexed
        big.write_bytes(b"z" * (len(STALE) - 1) + b"\n")  # the index's newlines are gone: each reads afresh
        barrier = threading.Barrier(2, timeout=10)
        original = FileReader.read_at

        def read_at(self: FileReader, offset: int, size: int) -> bytes:
            data = original(self, offset, size)
            barrier.wait()  # both threads found the index stale at the same time
            return data

        errors: list[BaseException] = []

        def page() -> None:
            try:
                files._read_lines(sb, "f.txt", 200_000, 1, max_file_bytes=1 << 30, budget=1 << 30, guard=None)
            except BaseException as exc:
                errors.append(exc)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(FileReader, "read_at", read_at)
            threads = [threading.Thread(target=page) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
    assert errors == []


def test_a_stale_page_read_afresh_stays_within_the_calls_read_cap(
    tmp_path: Path, same_identity: None
) -> None:
    """The bytes read for the stale page count against what the call may still read."""
    big = tmp_path / "f.txt"
    big.write_bytes(STALE)
    with Sandbox(tmp_path) as sb:
        files._read_lines(sb, "f.txt", 1, 1, max_file_bytes=1 << 30, budget=1 << 30, guard=None)  # indexed
        big.write_bytes(b"z" * (len(STALE) - 1) + b"\n")
        with pytest.raises(RpcError, match="too large"):
            files._read_lines(sb, "f.txt", 200_000, 1, max_file_bytes=len(STALE), budget=1 << 30, guard=None)
        files._LINE_INDEX.clear()
        assert (
            files._read_lines(sb, "f.txt", 1, 1, max_file_bytes=len(STALE), budget=1 << 30, guard=None)[2]
            == 1
        )
