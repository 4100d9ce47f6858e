"""Which optional extra of the ``medsam-segment`` package brings a module that could not be imported, for the one
line a user sees: ``serve: needs the serve extra: pip install 'medsam-segment[serve]'``.

The extras are read from the installed package's own metadata (its ``Requires-Dist`` lines), so pyproject.toml
stays the one list of them.
"""

from __future__ import annotations

import re
from importlib import metadata
from typing import Optional, Sequence

#: The distribution whose extras are looked up.
DISTRIBUTION = "medsam-segment"

_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def extra_providing(module: str, prefer: Sequence[str] = (), dist: Optional[metadata.Distribution] = None
                    ) -> Optional[str]:
    """The extra whose requirements bring ``module``'s top-level package: a requirement named like it
    (``fastapi`` -> ``serve``) or named after it (``itk`` -> ``eval``, by ``itk-morphologicalcontourinterpolation``);
    of several, the first of ``prefer`` that lists it, else the first listed. None when no extra lists it or the
    package's metadata cannot be read. ``dist``: the distribution (default: :data:`DISTRIBUTION`)."""
    top = _canonical(module.split(".")[0])
    try:
        requires = (dist or metadata.distribution(DISTRIBUTION)).requires or []
    except metadata.PackageNotFoundError:
        return None
    found = []
    for requirement in requires:
        name, extra = _NAME.match(requirement), _EXTRA.search(requirement)
        if name and extra:
            named = _canonical(name.group(1))
            if named == top or named.startswith(top + "-"):
                found.append(extra.group(1))
    preferred = [extra for extra in prefer if extra in found]
    return (preferred or found or [None])[0]


def needed(error: ImportError, prefer: Sequence[str] = (), dist: Optional[metadata.Distribution] = None) -> str:
    """What to install for the module ``error`` could not import: "needs the X extra: pip install '...[X]'"."""
    extra = extra_providing(error.name, prefer, dist) if error.name else None
    if extra:
        return f"needs the {extra} extra: pip install '{DISTRIBUTION}[{extra}]'"
    return f"cannot be loaded ({error}); reinstall {DISTRIBUTION} with the extras you use"


def missing_line(what: str, error: ImportError, prefer: Sequence[str] = (),
                 dist: Optional[metadata.Distribution] = None) -> str:
    """One line saying that ``what`` (a command, an option) :func:`needed` the extra that brings the module
    ``error`` could not import."""
    return f"{what}: {needed(error, prefer, dist)}"
