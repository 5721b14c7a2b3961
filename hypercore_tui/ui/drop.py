"""A file dropped on the terminal: terminals paste it as its path, and the dashboard
offers to copy the file instead of pasting the text."""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path


def pasted_path(text: str) -> Path | None:
    """An existing host file named by pasted text (a file dropped on the terminal).

    Terminals paste a dropped file as its path: quoted ('…' or "…"), as a
    ``file://`` URL (percent-encoded), or with backslash-escaped spaces, usually
    with a trailing newline. Returns the path when it names an existing file.
    """
    candidate = text.strip().strip("\r\n")
    if not candidate or "\n" in candidate or "\x00" in candidate:
        return None
    if len(candidate) >= 2 and candidate[0] == candidate[-1] and candidate[0] in "'\"":
        candidate = candidate[1:-1]
    if candidate.startswith("file://"):
        parsed = urllib.parse.urlsplit(candidate)
        if parsed.netloc not in ("", "localhost"):
            return None
        candidate = urllib.parse.unquote(parsed.path)
    elif "\\" in candidate:
        candidate = re.sub(r"\\(.)", r"\1", candidate)
    if candidate.startswith("~"):
        candidate = os.path.expanduser(candidate)
    if not candidate.startswith("/"):
        return None
    path = Path(candidate)
    try:
        if path.is_file():
            return path
    except OSError:
        return None
    return None
