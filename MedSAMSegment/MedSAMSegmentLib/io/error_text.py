"""The one line of an exception worth showing a user inside a longer message. Standard library only."""

from __future__ import annotations

import re


def first_line(exc: BaseException) -> str:
    """The informative part of an error: ITK's ``itk::ERROR`` line (plus its innermost cause), else the first
    line naming an error or exception, else the last line; the exception's type name when it has no text."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    itk = [line for line in lines if re.search(r"itk::ERROR|ITK ERROR", line)]
    if itk:
        text = re.sub(r"^.*?(itk::ERROR|ITK ERROR):\s*(\w+\(0x[0-9a-fA-F]+\):\s*)?", "", itk[0]).rstrip(":")
        cause = re.sub(r"^\[\w+\]\s*\w+:\s*", "", lines[-1]) if lines[-1] != itk[0] else ""
        return (text + (f": {cause}" if cause else ""))[:300]
    for line in lines:
        if "ERROR" in line.upper() or "exception" in line.lower():
            return line[:200]
    return lines[-1][:200] if lines else type(exc).__name__
