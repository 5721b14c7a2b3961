"""Files and folders dropped on the terminal: terminals paste them as their paths, and the
dashboard offers to carry them (the clipboard sync, a copy into the VM or the shared
folder) instead of pasting the text.

How terminals paste a drop: one path, quoted ('…' or "…") or with backslash-escaped
spaces, or as a ``file://`` URL (percent-encoded), usually with a trailing newline or
space; several at once either one a line (URLs or paths) or separated by spaces, each
quoted as a shell would read it. Percent-encoded bytes that are not UTF-8 are kept exact
(surrogate escapes, as ``os.fsdecode`` makes them).
"""

from __future__ import annotations

import os
import re
import shlex
import urllib.parse
from pathlib import Path

#: More paths than this in one paste is text, not a drop.
MAX_PATHS = 1000


def _from_url(candidate: str) -> str | None:
    parsed = urllib.parse.urlsplit(candidate)
    if parsed.netloc not in ("", "localhost"):
        return None
    return os.fsdecode(urllib.parse.unquote_to_bytes(parsed.path))


def _one(candidate: str) -> str | None:
    """The path one pasted item names (quotes, a URL, backslashes and ``~`` undone), or
    None when it is no absolute path."""
    candidate = candidate.strip()
    if len(candidate) >= 2 and candidate[0] == candidate[-1] and candidate[0] in "'\"":
        candidate = candidate[1:-1]
    if candidate.startswith("file://"):
        url = _from_url(candidate)
        if url is None:
            return None
        candidate = url
    elif "\\" in candidate:
        candidate = re.sub(r"\\(.)", r"\1", candidate, flags=re.DOTALL)
    return _absolute(candidate)


def _absolute(candidate: str) -> str | None:
    if candidate.startswith("~"):
        candidate = os.path.expanduser(candidate)
    return candidate if candidate.startswith("/") else None


def _words(text: str) -> list[str | None]:
    """Space-separated items read as a shell reads words (quotes, backslashes)."""
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        words = list(lexer)
    except ValueError:  # an unclosed quote: not shell words
        return [None]
    return [_from_url(w) if w.startswith("file://") else _absolute(w) for w in words]


def _existing(candidates: list[str | None]) -> tuple[Path, ...]:
    """The paths when every candidate names an existing file or folder, else ()."""
    if not candidates or len(candidates) > MAX_PATHS or None in candidates:
        return ()
    paths = [Path(c) for c in dict.fromkeys(candidates) if c is not None]
    try:
        if all(p.is_file() or p.is_dir() for p in paths):
            return tuple(paths)
    except (OSError, ValueError):
        pass
    return ()


def pasted_paths(text: str) -> tuple[Path, ...]:
    """The existing host files and folders that pasted text names (a drop on the
    terminal: see the module), in the order given; () when it is anything else."""
    stripped = text.strip()
    if not stripped or "\x00" in stripped:
        return ()
    whole = _existing([_one(stripped)])  # one path, spaces and all
    if whole:
        return whole
    lines = [line for line in re.split(r"\r?\n", stripped) if line.strip()]
    if len(lines) > 1 and (found := _existing([_one(line) for line in lines])):
        return found
    return _existing(_words(stripped))


def pasted_path(text: str) -> Path | None:
    """The one existing host file (not a folder) that pasted text names, else None."""
    paths = pasted_paths(text)
    if len(paths) == 1 and paths[0].is_file():
        return paths[0]
    return None
