"""Showing untrusted text (commands, paths from the AI) on the user's terminal."""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with every control character escaped (``\\x1b`` -> ``\\\\x1b``, newline -> ``\\\\n``).

    What the AI sends must not be able to move the cursor, erase lines or
    recolour the prompt that asks the user to approve it.
    """
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
