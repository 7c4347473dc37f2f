"""Shell text as bash would read it: every simple command, every redirection, every pipe.

Built on tree-sitter-bash, a complete grammar of bash (quotes, escapes,
``$'..'``, expansions, ``$(..)``, backticks, ``<(..)``, heredocs, lists,
pipelines, functions, loops), so nothing here re-implements shell parsing.
This module only *reads* the tree: it evaluates each word to the text bash
would pass, or to ``None`` when the value is only known at run time
(``$VAR``, ``$(..)``, globs in a command name), and lists the commands found at
any depth, including inside substitutions, functions and loops.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

import tree_sitter_bash
from tree_sitter import Language, Node, Parser

_PARSER = Parser(Language(tree_sitter_bash.language()))

#: Node types whose value is known only when the command runs.
_DYNAMIC = {
    "simple_expansion",
    "expansion",
    "command_substitution",
    "process_substitution",
    "arithmetic_expansion",
    "brace_expression",
}
_UNQUOTED_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_DQUOTE_ESCAPE = re.compile(r'\\([$`"\\\n])')


@dataclass(frozen=True)
class Redirect:
    op: str
    target: str | None  # None: only known at run time
    fd: str | None = None


@dataclass
class Command:
    """One simple command: its words as bash would pass them (``None`` where dynamic)."""

    argv: list[str | None]
    node: Node = field(repr=False)
    stdin_fed: bool = False  # a pipe, heredoc, herestring or ``<`` feeds its standard input


@dataclass
class Script:
    commands: list[Command]
    redirects: list[Redirect]
    errors: list[str]
    #: Every variable assignment anywhere (``X=1 cmd``, ``export X=1``, ``X=1``): name and value.
    assignments: list[tuple[str, str | None]] = field(default_factory=list)


#: The text being parsed. The grammar is fed an ASCII copy (see :func:`parse`) in
#: which each character is one byte, so a node's byte offsets index this text.
_SOURCE: ContextVar[str] = ContextVar("shell_source", default="")


def _text(node: Node) -> str:
    return _SOURCE.get()[node.start_byte : node.end_byte]


def _ascii_stand_in(text: str) -> str:
    """``text`` with every non-ASCII character replaced by ``a``.

    tree-sitter-bash's scanner crashes the whole process (SIGSEGV) on some
    non-ASCII input (``'\\x93{\\U0010f4a2'``, found by fuzzing; in every
    version tried), and a command is text from the AI. Every bash operator is
    ASCII, and any other character is part of a word to bash, as ``a`` is, so
    the structure is the same; word values are taken from the real text.
    """
    return text if text.isascii() else "".join(c if c < "\x80" else "a" for c in text)


def _ansi_c(body: str) -> str:
    # $'..' escapes: \n, \t, \xHH, \NNN, \uHHHH ... exactly what bash decodes.
    try:
        return codecs.decode(body.encode("latin-1", errors="backslashreplace"), "unicode_escape")
    except (UnicodeDecodeError, ValueError):
        return body


def word_value(node: Node) -> str | None:
    """The text bash passes for a word node, or ``None`` when it depends on run time."""
    kind = node.type
    if kind in _DYNAMIC:
        return None
    if kind == "word":
        text = _text(node)
        return _UNQUOTED_ESCAPE.sub(r"\1", text)
    if kind in ("number", "variable_name", "special_variable_name", "heredoc_start"):
        return _text(node)
    if kind == "raw_string":
        return _text(node)[1:-1]
    if kind == "ansi_c_string":
        return _ansi_c(_text(node)[2:-1])
    if kind == "string":
        parts: list[str] = []
        for child in node.children:
            if child.type == '"':
                continue
            if child.type == "string_content":
                parts.append(_DQUOTE_ESCAPE.sub(r"\1", _text(child)))
            else:
                return None
        return "".join(parts)
    if kind in ("concatenation", "command_name"):
        values = [word_value(child) for child in node.children]
        if any(v is None for v in values):
            return None
        return "".join(v for v in values if v is not None)
    if kind == "translated_string":  # $"..": a localised string
        inner = node.children[-1] if node.children else None
        return word_value(inner) if inner is not None else ""
    return None


def _redirect(node: Node) -> Redirect | None:
    op = next((c.type for c in node.children if c.type.startswith((">", "&>", "<")) or c.type in (">|",)), "")
    fd_node = node.child_by_field_name("descriptor")
    dest = node.child_by_field_name("destination")
    if dest is None:
        # Some grammar versions leave the destination unnamed: take the last child.
        dest = node.children[-1] if node.children else None
    target = word_value(dest) if dest is not None else None
    return Redirect(op=op, target=target, fd=_text(fd_node) if fd_node is not None else None)


#: Deepest nesting judged; deeper text "cannot be analysed" (and tree-sitter's own
#: Node.parent walks, which crashed the process on 10,000 nested $(...), are never used).
MAX_NESTING = 256


class _Unanalysable(Exception):
    pass


class _TooDeep(_Unanalysable):
    def __init__(self) -> None:
        super().__init__(f"the shell text nests more than {MAX_NESTING} levels deep")


def _walk(node: Node, parents: dict[int, Node]) -> Iterator[Node]:
    """Every node, depth first, recording each one's parent by node id."""
    stack = [(node, 0)]
    while stack:
        current, depth = stack.pop()
        if depth > MAX_NESTING:
            raise _TooDeep
        yield current
        for child in reversed(current.children):
            parents[child.id] = current
            stack.append((child, depth + 1))


def _command(node: Node) -> Command:
    argv: list[str | None] = []
    for child in node.children:
        if child.type == "variable_assignment" or child.type.endswith("redirect"):
            continue
        argv.append(word_value(child))
    return Command(argv=argv, node=node)


def _feeds_stdin(command: Node, parents: dict[int, Node]) -> bool:
    parent = parents.get(command.id)
    if parent is not None and parent.type == "pipeline":
        siblings = [c for c in parent.children if c.is_named]
        if siblings and siblings[0] != command:
            return True
        above = parents.get(parent.id)
        if above is not None and above.type == "heredoc_redirect":
            return True  # `cat <<EOF | sh`: the grammar hangs the pipeline under the heredoc
    holders = [command] + ([parent] if parent is not None and parent.type == "redirected_statement" else [])
    for holder in holders:
        for child in holder.children:
            if child.type in ("heredoc_redirect", "herestring_redirect"):
                return True
            if child.type == "file_redirect" and any(c.type == "<" for c in child.children):
                return True
    grand = parents.get(parent.id) if parent is not None else None
    if (
        parent is not None
        and parent.type == "redirected_statement"
        and grand is not None
        and grand.type == "pipeline"
    ):
        siblings = [c for c in grand.children if c.is_named]
        return bool(siblings) and siblings[0] != parent
    return False


def parse(text: str) -> Script:
    """Every simple command and redirection in ``text``, at any depth; syntax errors listed."""
    # bash joins `\<newline>` continuations before it reads words (`r\<newline>m` is `rm`);
    # the grammar reads them as blanks, so join them first.
    text = text.replace("\\\n", "")
    tree = _PARSER.parse(_ascii_stand_in(text).encode("ascii"))
    token = _SOURCE.set(text)
    try:
        return _collect(tree.root_node)
    finally:
        _SOURCE.reset(token)


def _collect(root: Node) -> Script:
    commands: list[Command] = []
    redirects: list[Redirect] = []
    errors: list[str] = []
    assignments: list[tuple[str, str | None]] = []
    if root.has_error:
        errors.append("the shell text has a syntax error")
    parents: dict[int, Node] = {}
    try:
        _visit(root, parents, commands, redirects, assignments)
    except _Unanalysable as exc:
        errors.append(str(exc))
    return Script(commands=commands, redirects=redirects, errors=errors, assignments=assignments)


def _visit(
    root: Node,
    parents: dict[int, Node],
    commands: list[Command],
    redirects: list[Redirect],
    assignments: list[tuple[str, str | None]],
) -> None:
    for node in _walk(root, parents):
        if node.type in ("test_command", "arithmetic_expansion"):
            text = _text(node)
            if "$(" in text or "`" in text:
                # bash evaluates array subscripts in arithmetic, even from quoted text: 'a[$(cmd)]' runs cmd.
                raise _Unanalysable("a test or arithmetic expression that can run commands")
        if node.type == "command":
            command = _command(node)
            command.stdin_fed = _feeds_stdin(node, parents)
            commands.append(command)
        elif node.type == "file_redirect" and (r := _redirect(node)):
            redirects.append(r)
        elif node.type == "variable_assignment":
            name = node.child_by_field_name("name")
            value = node.child_by_field_name("value")
            assignments.append((_text(name) if name else "", word_value(value) if value is not None else ""))
