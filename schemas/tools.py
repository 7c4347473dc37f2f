"""Typed params and results of every tool, and the tool catalogue.

The JSON Schemas that models see (``GET /api/tools``) are generated from these
models; nothing here is written by hand twice.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from schemas.errors import ErrorCode

#: Limits the models enforce; the client may enforce tighter ones of its own.
MAX_PATH_CHARS = 4096
MAX_FILES_PER_READ = 2000
MAX_COMMAND_CHARS = 100_000
MAX_COMMAND_TIMEOUT_S = 3600.0
DEFAULT_COMMAND_TIMEOUT_S = 60.0
MAX_WRITE_CHARS = 8 * 1024 * 1024
MAX_LIST_ENTRIES = 100_000
DEFAULT_LIST_ENTRIES = 5_000
#: A line number or count of lines no file the client reads can exceed.
MAX_LINES = 1_000_000_000
MAX_PATTERN_CHARS = 2_000
MAX_GLOB_CHARS = 1_000
DEFAULT_SEARCH_RESULTS = 200
MAX_SEARCH_RESULTS = 2_000
SHA256_HEX = "^[0-9a-f]{64}$"


def _integral(value: object) -> object:
    """JSON Schema's ``integer`` is any number without a fractional part: ``5.0`` is one.

    Strict pydantic refuses the float ``5.0`` for an ``int``; taking it as ``5`` keeps
    the client's validation and the published schema in exact agreement. Booleans,
    strings and ``5.5`` are still refused.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: An ``int`` param as JSON Schema's ``integer``: ``5`` and ``5.0``, nothing else.
JsonInt = Annotated[int, BeforeValidator(_integral)]
#: The same or ``null``. (Not ``JsonInt | None``: the field's ge/le would then be written
#: into the schema as unknown keywords, not as minimum/maximum.)
OptionalJsonInt = Annotated[int | None, BeforeValidator(_integral)]


class Params(BaseModel):
    """Tool params: exact JSON types (``strict``), unknown fields refused.

    Every constraint is one the generated JSON Schema states too (no validators
    the schema cannot express): whatever the schema accepts, the client accepts,
    and the reverse (tests/schemas/test_tool_schemas.py).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Result(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


def _sha256_field(description: str) -> Any:
    # max_length too: a validator using Python's re (jsonschema) lets "$" match before a
    # final newline, so "<64 hex>\n" would pass the schema's pattern but not pydantic's.
    return Field(default=None, pattern=SHA256_HEX, min_length=64, max_length=64, description=description)


# --- list_files ------------------------------------------------------------


class ListFilesParams(Params):
    path: str = Field(
        default="./",
        min_length=1,
        max_length=MAX_PATH_CHARS,
        description="Folder to list, relative to the workspace root.",
    )
    recursive: bool = Field(
        default=False, description="List every file below the folder, not only its direct children."
    )
    respect_gitignore: bool | None = Field(
        default=None,
        description="Leave out what the project's .gitignore files ignore (and .git/). Default: on for recursive listings.",
    )
    max_entries: JsonInt = Field(
        default=DEFAULT_LIST_ENTRIES,
        ge=1,
        le=MAX_LIST_ENTRIES,
        description="Stop after this many entries (the answer then says truncated).",
    )


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str
    is_dir: bool
    path: str = Field(description="Relative to the workspace root, ready for read_files.")
    size: int | None = None
    is_symlink: bool = False
    target_outside: bool = False


class ListFilesResult(Result):
    files: list[FileEntry] = Field(
        description="One entry per file or folder: name, is_dir, path (relative to the root), size in bytes "
        "(null for folders); links have is_symlink, and target_outside when they leave the workspace."
    )
    truncated: bool = Field(
        default=False,
        description="The listing stopped before the end (max_entries, the answer size or the time limit).",
    )
    timed_out: bool = Field(
        default=False, description="The time limit (20 s) stopped the listing (then truncated too)."
    )


# --- read_files ------------------------------------------------------------


class ReadFilesParams(Params):
    files: list[Annotated[str, Field(min_length=1, max_length=MAX_PATH_CHARS)]] = Field(
        min_length=1,
        max_length=MAX_FILES_PER_READ,
        description="Paths of the files to read, relative to the workspace root.",
    )
    encoding: Literal["text", "base64"] = Field(
        default="text",
        description='"text" answers UTF-8 text and refuses binary files; "base64" answers any file base64-encoded.',
    )
    offset: OptionalJsonInt = Field(
        default=None,
        ge=1,
        le=MAX_LINES,
        description="First line to read (1 is the first line), for every file of the call. With offset or "
        "limit each file's content holds only those lines; total_lines tells how many there are.",
    )
    limit: OptionalJsonInt = Field(
        default=None,
        ge=1,
        le=MAX_LINES,
        description="How many lines to read from offset (default: to the end of the file).",
    )


class ReadFilesResult(Result):
    files: dict[str, str] = Field(
        description="{path: content} for each file read: the whole file, or only the lines asked for "
        "(exactly as in the file, line endings included)."
    )
    sha256: dict[str, str] = Field(
        default_factory=dict,
        description="{path: sha256 of the whole file's bytes}, for write_file's and edit_file's expected_sha256.",
    )
    total_lines: dict[str, int] = Field(
        default_factory=dict,
        description="{path: number of lines in the whole file}, to read a large file page by page.",
    )


# --- search_files ----------------------------------------------------------


class SearchFilesParams(Params):
    pattern: str = Field(
        min_length=1,
        max_length=MAX_PATTERN_CHARS,
        description="Regular expression in RE2 syntax (as ripgrep: no backreferences or look-around), "
        "matched within each line (in a file with CRLF line endings, $ comes after the \\r: write \\r?$); "
        "with literal=true, plain text.",
    )
    path: str = Field(
        default="./",
        min_length=1,
        max_length=MAX_PATH_CHARS,
        description="Folder to search (everything below it), or a single file, relative to the workspace root.",
    )
    glob: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_GLOB_CHARS,
        description="Only files whose path matches: without a '/' it matches the file name at any depth "
        "('*.py', 'test_*'); with one, the whole path from the workspace root ('src/**/*.ts'). "
        "'*' and '?' stay within one folder, '**' spans any folders, {a,b} lists alternatives ('*.{js,ts}').",
    )
    case_sensitive: bool = Field(default=True, description="false: letters match in either case.")
    literal: bool = Field(
        default=False, description="Take pattern as plain text, not a regular expression ('foo(' as is)."
    )
    max_results: JsonInt = Field(
        default=DEFAULT_SEARCH_RESULTS,
        ge=1,
        le=MAX_SEARCH_RESULTS,
        description="Stop after this many matching lines (the answer then says truncated).",
    )
    respect_gitignore: bool = Field(
        default=True,
        description="Skip what the project's .gitignore files ignore (node_modules/, build output). "
        "Not applied when path itself is ignored.",
    )


class SearchFilesResult(Result):
    matches: list[str] = Field(
        description='One "path:line: text" per matching line, in path order; a long line is shortened '
        "around the match and control characters are escaped."
    )
    truncated: bool = Field(
        description="The search stopped before the end (max_results, the time limit or the answer size): "
        "narrow path or glob, or make the pattern more specific."
    )
    files_searched: int = Field(description="Text files searched.")
    files_matched: int = Field(description="Files with at least one matching line.")
    skipped_binary: int = Field(default=0, description="Files skipped as binary (a NUL byte near the start).")
    skipped_too_large: int = Field(
        default=0, description="Files skipped as larger than the search's size limit."
    )
    timed_out: bool = Field(
        default=False, description="The time limit stopped the search (then truncated too)."
    )


# --- edit_file -------------------------------------------------------------


class EditFileParams(Params):
    path: str = Field(
        min_length=1,
        max_length=MAX_PATH_CHARS,
        description="Existing text file to change, relative to the workspace root.",
    )
    old_string: str = Field(
        min_length=1,
        max_length=MAX_WRITE_CHARS,
        description="Exact text to replace, whitespace and indentation included (copy it from read_files); "
        "with enough surrounding lines to occur only once.",
    )
    new_string: str = Field(
        max_length=MAX_WRITE_CHARS, description="Text to put in its place (empty to delete old_string)."
    )
    replace_all: bool = Field(
        default=False, description="Replace every occurrence of old_string, not just a unique one."
    )
    expected_sha256: str | None = _sha256_field(
        "The sha256 read_files reported for this file: the edit is refused if the file changed since."
    )


class EditFileResult(Result):
    path: str = Field(description="The file changed, relative to the root (after a link inside the root).")
    replacements: int = Field(description="How many occurrences were replaced.")
    diff: str = Field(
        description="Unified diff of the change (a/ and b/ paths); a long one is cut with a marker."
    )
    checkpoint: int | None = Field(
        default=None, description="Give it to undo to restore the previous content."
    )
    sha256: str = Field(description="Of the new content: expected_sha256 for a next edit.")


# --- execute_command -------------------------------------------------------


class ExecuteCommandParams(Params):
    command: str = Field(
        min_length=1, max_length=MAX_COMMAND_CHARS, description="Shell command, run in the workspace root."
    )
    timeout: float = Field(
        default=DEFAULT_COMMAND_TIMEOUT_S,
        gt=0,
        le=MAX_COMMAND_TIMEOUT_S,
        description="Seconds before the command and its children are killed.",
    )


class ExecuteCommandResult(Result):
    stdout: str = Field(
        description="Standard output (UTF-8, bad bytes replaced); cut in the middle when long."
    )
    stderr: str = Field(description="Standard error, likewise.")
    exit_code: int = Field(description="The command's exit status; non-zero is a normal answer.")


# --- write_file ------------------------------------------------------------


class WriteFileParams(Params):
    path: str = Field(
        min_length=1,
        max_length=MAX_PATH_CHARS,
        description="File to create or replace, relative to the workspace root.",
    )
    content: str = Field(
        max_length=MAX_WRITE_CHARS, description="The whole new content of the file (UTF-8 text)."
    )
    expected_sha256: str | None = _sha256_field(
        "The sha256 read_files reported for this file: the write is refused if the file changed since."
    )


class WriteFileResult(Result):
    path: str | None = Field(default=None, description="Where the bytes went, relative to the root.")
    bytes_written: int | None = Field(default=None, description="Bytes of the new content.")
    created: bool | None = Field(default=None, description="The file did not exist before.")
    checkpoint: int | None = Field(
        default=None, description="Give it to undo to restore the previous content."
    )


class ReadOutputParams(Params):
    output_id: str = Field(
        pattern="^[0-9a-f]{16}$",
        min_length=16,
        max_length=16,
        description="The output_id of a command whose output was cut.",
    )
    stream: Literal["stdout", "stderr"] = Field(default="stdout", description="Which output to read.")
    offset: JsonInt = Field(
        default=0, ge=0, description="Byte offset to start from (next_offset of the previous page)."
    )
    limit: JsonInt = Field(default=256 * 1024, ge=1, le=1024 * 1024, description="Bytes to read.")


class ReadOutputResult(Result):
    data: str = Field(description="The bytes read, as UTF-8 text.")
    offset: int = Field(description="Where this page starts.")
    next_offset: int = Field(description="The offset of the next page.")
    total_bytes: int = Field(description="The whole output's size.")
    eof: bool = Field(description="This page reaches the end.")


# --- undo ------------------------------------------------------------------


class UndoParams(Params):
    checkpoint: OptionalJsonInt = Field(
        default=None,
        ge=1,
        description="The checkpoint a write_file or edit_file answered; the last change when omitted.",
    )


class UndoResult(Result):
    checkpoint: int = Field(description="The checkpoint undone.")
    path: str = Field(description="The file restored or deleted, relative to the root.")
    restored: Literal["previous content", "deleted"] = Field(
        description='"deleted" when the change had created the file.'
    )


# --- handshake -------------------------------------------------------------


class InitializeParams(BaseModel):
    """The client's first message. Tolerant: unknown fields are kept, not refused."""

    model_config = ConfigDict(extra="allow", frozen=True)
    workspace: str = Field(min_length=1, max_length=200)
    client: str | None = Field(default=None, max_length=200)
    tools: list[str] | None = Field(default=None, max_length=100)
    #: The client keeps requests running across reconnects and dedups replays (``rpc_client/ledger.py``).
    resume: bool = False
    #: The ``session`` of a previous initialize answer: the same workspace (and id) back.
    session: str | None = Field(default=None, max_length=200)


class InitializeResult(Result):
    workspace_id: str


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Field errors in a JSON-safe form, without the input values (they may be huge or secret)."""
    return [
        {"loc": [str(p) for p in error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


# --- the catalogue ---------------------------------------------------------


#: What the errors every tool can answer mean (its own are in ``ToolSpec.errors``).
COMMON_ERRORS: dict[ErrorCode, str] = {
    ErrorCode.INVALID_PARAMS: "the params do not match the schema (data.errors names the fields)",
    ErrorCode.INTERNAL_ERROR: "a bug in the client; try another way",
}
_PATH_ERRORS: dict[ErrorCode, str] = {
    ErrorCode.PATH_OUTSIDE_ROOT: "the path leaves the workspace (.., an absolute path, a link): use paths inside it",
    ErrorCode.NOT_FOUND: "no such file or folder: list_files shows what exists",
    ErrorCode.INVALID_PATH: "an empty, over-long or malformed path",
}


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    params: type[Params]
    result: type[Result]
    #: The errors this tool answers and what each means for it (besides ``COMMON_ERRORS``).
    errors: dict[ErrorCode, str] = field(default_factory=dict)

    def parameters_schema(self) -> dict[str, Any]:
        """The JSON Schema of the params, generated from the model."""
        return self.params.model_json_schema()

    def as_function(self) -> dict[str, Any]:
        """The tool in the Chat Completions function-calling format, which every
        OpenAI-compatible server takes: ``{"type": "function", "function": {...}}``."""
        function = {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters_schema(),
        }
        return {"type": "function", "function": function}


TOOLS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        ToolSpec(
            "list_files",
            "List a folder of the workspace (the root by default): each entry has name, is_dir, size and a "
            "path relative to the root that the other tools accept. recursive=true lists the whole subtree, "
            "leaving out what .gitignore ignores and .git/. A listing stops at max_entries and then says "
            "truncated: list a subfolder instead. Secrets (.env, keys) are never listed. To find code by "
            "what it contains, use search_files.",
            ListFilesParams,
            ListFilesResult,
            {
                **_PATH_ERRORS,
                ErrorCode.NOT_A_DIRECTORY: "the path is a file, not a folder",
                ErrorCode.DENIED: "the folder is hidden by the ignore rules (secrets)",
            },
        ),
        ToolSpec(
            "read_files",
            "Read up to 2,000 text files in one call (8 MiB of answer at most). Answers files: {path: content}, sha256 (for the "
            "expected_sha256 of edit_file and write_file) and total_lines. For a large file (over 8 MiB, "
            "or too large for one answer) read pages of lines: offset (first line, 1-based) and limit "
            "(number of lines) apply to every file of the call, and each content then holds only those "
            "lines, exactly as in the file. When some paths fail (missing, outside the workspace, secret, "
            "binary, too large) the error names each one and why, and files still holds those that were "
            "read. Binary files: encoding=base64.",
            ReadFilesParams,
            ReadFilesResult,
            {
                **_PATH_ERRORS,
                ErrorCode.PARTIAL_FAILURE: "some paths failed: data.errors says why for each, data.files "
                "holds the files that were read",
                ErrorCode.TOO_LARGE: "over 8 MiB, or too large for the answer: read it in pages with "
                "offset and limit (or in a call of its own)",
                ErrorCode.NOT_TEXT: "not UTF-8 text: read it with encoding=base64",
                ErrorCode.NOT_A_FILE: "a folder or a special file",
                ErrorCode.DENIED: "hidden by the ignore rules (secrets), or unreadable",
            },
        ),
        ToolSpec(
            "search_files",
            "Search the workspace's text files for a regular expression, like grep -rn: the fast way to "
            "find where something is defined or used. Answers matches, one 'path:line: text' per matching "
            "line, and truncated when max_results or the time limit stopped it: then narrow path or glob, "
            "or make the pattern more specific. RE2 syntax, as ripgrep: no backreferences or look-around; "
            "a match never spans lines, and ^ and $ match at the start and end of each line. "
            "literal=true searches for the text as is (e.g. 'foo(' or 'a.b'). Skipped: binary files, "
            "files over 16 MiB, symbolic links, .git/, secrets, and what .gitignore ignores "
            "(respect_gitignore=false to include it). Read the lines around a match with read_files "
            "offset and limit.",
            SearchFilesParams,
            SearchFilesResult,
            {
                **_PATH_ERRORS,
                ErrorCode.INVALID_PARAMS: "the pattern or glob is not valid (the message says why; for "
                "plain text use literal=true), or the params do not match the schema",
                ErrorCode.DENIED: "the path is hidden by the ignore rules (secrets)",
                ErrorCode.NOT_A_FILE: "the path is a special file (FIFO, device)",
            },
        ),
        ToolSpec(
            "edit_file",
            "Change part of an existing text file: replace old_string, which must occur exactly once, "
            "with new_string (or every occurrence with replace_all=true). Prefer it to write_file for "
            "changes: send only the lines that change plus enough unchanged lines around them to make "
            "old_string unique. old_string must match the file exactly, indentation and whitespace "
            "included: copy it from read_files (in a file with CRLF line endings a newline stands for "
            "CRLF). Answers a unified diff of the change, the number of replacements, the new sha256 "
            "and a checkpoint for undo. If the file changed since you read it (expected_sha256, or "
            "during the edit) nothing is written.",
            EditFileParams,
            EditFileResult,
            {
                **_PATH_ERRORS,
                ErrorCode.NO_MATCH: "old_string is not in the file: read the file again and copy the text "
                "exactly (whitespace and indentation are the usual difference)",
                ErrorCode.MULTIPLE_MATCHES: "old_string occurs several times (data.matches says how "
                "many): add surrounding lines to make it unique, or set replace_all",
                ErrorCode.INVALID_PARAMS: "old_string equals new_string, or the params do not match the schema",
                ErrorCode.CONFLICT: "the file changed since it was read (expected_sha256) or during the "
                "edit: read it again",
                ErrorCode.NOT_TEXT: "not UTF-8 text: edit_file changes text files only",
                ErrorCode.TOO_LARGE: "the file (8 MiB) or the result would be too large",
                ErrorCode.DENIED: "read-only mode, a secret, .git/ or the ignore rules file, or a "
                "read-only file",
                ErrorCode.NOT_A_FILE: "a folder or a special file",
            },
        ),
        ToolSpec(
            "write_file",
            "Create a text file, or replace a whole one (missing folders are created). To change part of "
            "an existing file use edit_file instead. The file is replaced atomically and checkpointed "
            "first, so undo can restore it. Pass expected_sha256 (from read_files) to refuse the write if "
            "the file changed since you read it. Paths that leave the workspace, secrets and .git/ are "
            "refused.",
            WriteFileParams,
            WriteFileResult,
            {
                **_PATH_ERRORS,
                ErrorCode.CONFLICT: "the file changed since it was read (expected_sha256): read it again",
                ErrorCode.TOO_LARGE: "the content is over 8 MiB",
                ErrorCode.DENIED: "read-only mode, a secret, .git/ or the ignore rules file, or a "
                "read-only file",
                ErrorCode.NOT_A_FILE: "the path is a folder or a special file",
            },
        ),
        ToolSpec(
            "execute_command",
            "Run a shell command (bash) in the workspace root and return stdout, stderr and exit_code. A "
            "non-zero exit code is a normal answer. To find text in files use search_files, to read them "
            "read_files: they are faster and never need approval. Commands that delete files or raise "
            "privileges need the user's approval and may be refused: then choose another way. Long output "
            "is cut in the middle with a marker (read_output reads all of it). The command and everything "
            "it started are killed after timeout seconds.",
            ExecuteCommandParams,
            ExecuteCommandResult,
            {
                ErrorCode.DENIED: "refused: dangerous and not approved by the user, or read-only mode: "
                "choose another way",
                ErrorCode.TIMEOUT: "killed after timeout seconds (data holds the output so far)",
                ErrorCode.CANNOT_START: "the command could not be started",
                ErrorCode.CANCELLED: "the request was withdrawn",
            },
        ),
        ToolSpec(
            "read_output",
            "Read the full output of a command whose answer was cut in the middle (it then has output_id), "
            "page by page: pass next_offset as the next offset until eof. Only the newest 20 are kept.",
            ReadOutputParams,
            ReadOutputResult,
            {ErrorCode.NOT_FOUND: "no such output (only the newest 20 are kept)"},
        ),
        ToolSpec(
            "undo",
            "Undo a write_file or edit_file: restore the file's previous content, or delete a file the "
            "write created. Without checkpoint, the last change not yet undone. Refused if the file "
            "changed since that change.",
            UndoParams,
            UndoResult,
            {
                ErrorCode.NOT_FOUND: "nothing (left) to undo for that checkpoint",
                ErrorCode.CONFLICT: "the file changed since that write: undo would overwrite it",
                ErrorCode.DENIED: "read-only mode",
            },
        ),
    )
}


def tools_for_llm() -> list[dict[str, Any]]:
    """Every tool in the function-calling format (a fresh copy: the caller may change it)."""
    return copy.deepcopy(_functions())


@functools.cache
def _functions() -> list[dict[str, Any]]:
    # Generating the JSON Schemas took 5 % of the hub's CPU in a chat turn: once is enough.
    return [spec.as_function() for spec in TOOLS.values()]
