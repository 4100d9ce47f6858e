"""Extension packaging: every module file is in the module's CMakeLists.txt; the metadata files agree."""

from __future__ import annotations

import json
import os
import py_compile
import re
import xml.dom.minidom

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.path.join(ROOT, "MedSAMSegment")
SKIP_DIRS = {"__pycache__", ".pytest_cache"}


def _module_files():
    """Python and resource files under MedSAMSegment/ that Slicer needs (build products excluded)."""
    found = []
    for folder, dirs, files in os.walk(MODULE):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        rel_folder = os.path.relpath(folder, MODULE)
        for name in files:
            rel = os.path.normpath(os.path.join(rel_folder, name)).replace(os.sep, "/")
            if rel == "CMakeLists.txt" or name.endswith((".pyc", ".pyo")) or name.startswith(".partial-"):
                continue
            if name.endswith(".py") or rel.startswith("Resources/") or "/data/" in f"/{rel}":
                found.append(rel)
    return sorted(found)


def _cmake_listed():
    text = open(os.path.join(MODULE, "CMakeLists.txt")).read()
    text = re.sub(r"#.*", "", text)
    listed = set()
    for block in re.findall(r"set\(MODULE_PYTHON_(?:SCRIPTS|RESOURCES)(.*?)\)", text, re.S):
        for token in block.split():
            listed.add(token.replace("${MODULE_NAME}", "MedSAMSegment"))
    return listed


def _cmake_variables(path):
    text = open(path).read()
    return dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', text))


def _s4ext():
    values = {}
    for line in open(os.path.join(ROOT, "MedSAMExtension.s4ext")):
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            values[key] = value.strip()
    return values


def test_every_module_file_is_listed_in_cmake():
    listed = _cmake_listed()
    files = _module_files()
    assert "MedSAMSegment.py" in files
    missing = [f for f in files if f not in listed]
    assert not missing, f"add these to MedSAMSegment/CMakeLists.txt: {missing}"
    absent = [f for f in listed if not os.path.isfile(os.path.join(MODULE, f))]
    assert not absent, f"MedSAMSegment/CMakeLists.txt lists files that do not exist: {absent}"


def test_cmake_builds_the_module():
    text = open(os.path.join(MODULE, "CMakeLists.txt")).read()
    assert "slicerMacroBuildScriptedModule" in text
    top = open(os.path.join(ROOT, "CMakeLists.txt")).read()
    assert "add_subdirectory(MedSAMSegment)" in top
    assert "find_package(Slicer REQUIRED)" in top


def test_extension_metadata_agrees():
    cmake = _cmake_variables(os.path.join(ROOT, "CMakeLists.txt"))
    s4ext = _s4ext()
    index = json.load(open(os.path.join(ROOT, "MedSAMExtension.json")))
    assert cmake["EXTENSION_DEPENDS"] == s4ext["depends"] == "PyTorch"
    assert index["build_dependencies"] == ["PyTorch"]
    assert cmake["EXTENSION_CATEGORY"] == s4ext["category"] == index["category"]
    assert cmake["EXTENSION_HOMEPAGE"] == s4ext["homepage"]
    assert cmake["EXTENSION_ICONURL"] == s4ext["iconurl"]
    assert cmake["EXTENSION_DESCRIPTION"] == s4ext["description"]
    assert cmake["EXTENSION_SCREENSHOTURLS"] == s4ext["screenshoturls"]
    assert s4ext["scmurl"] == index["scm_url"]
    assert s4ext["scmrevision"] == index["scm_revision"]
    assert s4ext["build_subdirectory"] == index["build_subdirectory"] == "."
    # The icon and screenshot URLs point at files of this repository.
    for url in [cmake["EXTENSION_ICONURL"], *cmake["EXTENSION_SCREENSHOTURLS"].split()]:
        relative = url.split("/main/", 1)[1]
        assert os.path.isfile(os.path.join(ROOT, relative)), f"{url} names a file missing here: {relative}"


def test_extension_icon_is_128_png():
    PIL = pytest.importorskip("PIL.Image")
    with PIL.open(os.path.join(ROOT, "Resources", "Icons", "MedSAMExtension.png")) as image:
        assert image.format == "PNG" and image.size == (128, 128)


def test_gui_files_compile_and_ui_is_valid_xml(tmp_path):
    gui_files = (
        "MedSAMSegment.py",
        "SegmentEditorMedSAMLib/__init__.py",
        "SegmentEditorMedSAMLib/SegmentEditorEffect.py",
    )
    for rel in gui_files:
        py_compile.compile(os.path.join(MODULE, rel), cfile=str(tmp_path / "x.pyc"), doraise=True)
    document = xml.dom.minidom.parse(os.path.join(MODULE, "Resources", "UI", "MedSAMSegment.ui"))
    names = {w.getAttribute("name") for w in document.getElementsByTagName("widget")}
    module_source = open(os.path.join(MODULE, "MedSAMSegment.py")).read()
    used = set(re.findall(r"self\.ui\.(\w+)", module_source))
    assert used <= names, f"widgets used by MedSAMSegment.py but missing in the .ui: {sorted(used - names)}"
