"""Typed params and results of every tool, and the tool catalogue.

The JSON Schemas that models see (``GET /api/tools``) are generated from these
models; nothing here is written by hand twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: Limits the models enforce; the client may enforce tighter ones of its own.
MAX_PATH_CHARS = 4096
MAX_FILES_PER_READ = 100
MAX_COMMAND_CHARS = 100_000
MAX_COMMAND_TIMEOUT_S = 3600.0
DEFAULT_COMMAND_TIMEOUT_S = 60.0
MAX_WRITE_CHARS = 8 * 1024 * 1024
MAX_LIST_ENTRIES = 100_000
DEFAULT_LIST_ENTRIES = 5_000


class Params(BaseModel):
    """Tool params: exact JSON types (``strict``), unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Result(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


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
    max_entries: int = Field(
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
    files: list[FileEntry]
    truncated: bool = False


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


class ReadFilesResult(Result):
    files: dict[str, str]
    sha256: dict[str, str] = Field(
        default_factory=dict, description="Of each file's bytes, for write_file's expected_sha256."
    )


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
    stdout: str
    stderr: str
    exit_code: int


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
    expected_sha256: str | None = Field(
        default=None,
        pattern="^[0-9a-f]{64}$",
        description="The sha256 read_files reported for this file: the write is refused if the file changed since.",
    )


class WriteFileResult(Result):
    path: str | None = None
    bytes_written: int | None = None
    created: bool | None = None
    checkpoint: int | None = None


class ReadOutputParams(Params):
    output_id: str = Field(
        pattern="^[0-9a-f]{16}$", description="The output_id of a command whose output was cut."
    )
    stream: Literal["stdout", "stderr"] = "stdout"
    offset: int = Field(
        default=0, ge=0, description="Byte offset to start from (next_offset of the previous page)."
    )
    limit: int = Field(default=256 * 1024, ge=1, le=1024 * 1024, description="Bytes to read.")


class ReadOutputResult(Result):
    data: str
    offset: int
    next_offset: int
    total_bytes: int
    eof: bool


# --- undo ------------------------------------------------------------------


class UndoParams(Params):
    checkpoint: int | None = Field(
        default=None, ge=1, description="The checkpoint a write_file answered; the last change when omitted."
    )


class UndoResult(Result):
    checkpoint: int
    path: str
    restored: Literal["previous content", "deleted"]


# --- handshake -------------------------------------------------------------


class InitializeParams(BaseModel):
    """The client's first message. Tolerant: unknown fields are kept, not refused."""

    model_config = ConfigDict(extra="allow", frozen=True)
    workspace: str = Field(min_length=1, max_length=200)
    client: str | None = Field(default=None, max_length=200)
    tools: list[str] | None = Field(default=None, max_length=100)


class InitializeResult(Result):
    workspace_id: str


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Field errors in a JSON-safe form, without the input values (they may be huge or secret)."""
    return [
        {"loc": [str(p) for p in error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


# --- the catalogue ---------------------------------------------------------


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    params: type[Params]
    result: type[Result]

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
            "List the files and folders of a folder in the workspace (the root by default). Each entry has "
            "name, is_dir, size and a path relative to the root that read_files accepts. Use recursive=true "
            "to see a whole subtree; long listings stop at max_entries and say truncated. Paths that leave "
            "the workspace are refused.",
            ListFilesParams,
            ListFilesResult,
        ),
        ToolSpec(
            "read_files",
            "Read one or more text files of the workspace in one call (up to 100). Answers files: {path: "
            "content}. When some paths fail (missing, outside the workspace, binary, too large), the error "
            "names each one and why, and files still holds those that were read.",
            ReadFilesParams,
            ReadFilesResult,
        ),
        ToolSpec(
            "execute_command",
            "Run a shell command in the workspace root and return stdout, stderr and exit_code. A non-zero "
            "exit code is a normal answer. Commands that delete files or raise privileges need the user's "
            "approval and may be refused: then choose another way. Long output is cut in the middle with a "
            "marker. The command is killed after timeout seconds.",
            ExecuteCommandParams,
            ExecuteCommandResult,
        ),
        ToolSpec(
            "write_file",
            "Create or replace a whole text file in the workspace (missing folders are created). The file "
            "is replaced atomically and checkpointed first, so undo can restore it. Pass expected_sha256 "
            "(from read_files) to refuse the write if the user changed the file since you read it. Paths "
            "that leave the workspace, secrets and .git/ are refused.",
            WriteFileParams,
            WriteFileResult,
        ),
        ToolSpec(
            "read_output",
            "Read the full output of a command whose answer was cut in the middle (it then has output_id), "
            "page by page: pass next_offset as the next offset until eof. Only the newest 20 are kept.",
            ReadOutputParams,
            ReadOutputResult,
        ),
        ToolSpec(
            "undo",
            "Undo a write_file: restore the file's previous content, or delete a file the write created. "
            "Without checkpoint, the last change. Refused if the file changed since that write.",
            UndoParams,
            UndoResult,
        ),
    )
}


def tools_for_llm() -> list[dict[str, Any]]:
    """Every tool in the function-calling format."""
    return [spec.as_function() for spec in TOOLS.values()]
