"""Which pick-up keys are deliverable, and why not (bad input is refused on
purpose: ``refused.py`` reports it once and moves it to the quarantine)."""

from __future__ import annotations

#: Most servers refuse a path component longer than this many bytes.
MAX_COMPONENT_BYTES = 255


def is_folder_placeholder(key: str) -> bool:
    return key.endswith("/")


def rejection(relative_path: str) -> str | None:
    """Why a file at ``relative_path`` (below its pick-up prefix) cannot be
    delivered, or None if it can."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in relative_path):
        return "name contains a control character"
    if "\\" in relative_path:
        # Windows and some SFTP servers read a backslash as a folder separator.
        return "name contains a backslash"
    parts = relative_path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "path contains an empty, '.' or '..' component"
    longest = max(len(part.encode("utf-8")) for part in parts)
    if longest > MAX_COMPONENT_BYTES:
        return (
            f"a path component is {longest} bytes long; destinations accept {MAX_COMPONENT_BYTES}"
        )
    return None
