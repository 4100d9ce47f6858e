"""Extension packaging: every module file is in the module's CMakeLists.txt; the metadata files agree."""

from __future__ import annotations

import glob
import json
import os
import py_compile
import re
import xml.dom.minidom

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.path.join(ROOT, "MedSAMSegment")
SKIP_DIRS = {"__pycache__", ".pytest_cache"}
#: The folders of Qt files beside MedSAMSegment.py (the module file itself is one too).
QT_FOLDERS = ("SegmentEditorMedSAMLib", "MedSAMSegmentWidgets")
#: The most lines a Qt file may have: they stay thin, the work is in the core.
QT_FILE_MAX_LINES = 400


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
    # Every MedSAMSegmentLib/*.py is found here (the module imports them all inside Slicer).
    lib = os.path.join(MODULE, "MedSAMSegmentLib")
    assert {f"MedSAMSegmentLib/{n}" for n in os.listdir(lib) if n.endswith(".py")} <= set(files)
    assert "MedSAMSegmentLib/scene/dependencies.py" in files
    missing = [f for f in files if f not in listed]
    assert not missing, f"add these to MedSAMSegment/CMakeLists.txt: {missing}"
    absent = [f for f in listed if not os.path.isfile(os.path.join(MODULE, f))]
    assert not absent, f"MedSAMSegment/CMakeLists.txt lists files that do not exist: {absent}"


def test_study_code_is_not_in_the_extension():
    """The evaluation package lives in Evaluation/, installed by the ``eval`` extra, never by the extension's
    CMake (nor the batch, server and browser annotator packages); the study modules are gone from the core."""
    listed = _cmake_listed()
    study = os.path.join(ROOT, "Evaluation", "medsam_evaluation")
    modules = {n for n in os.listdir(study) if n.endswith(".py")}
    assert {"baselines.py", "benchmark.py", "simulate.py", "cli.py"} <= modules
    for name in ("evaluation.py", "benchmark.py", "baselines.py", "simulate.py"):
        assert f"MedSAMSegmentLib/{name}" not in listed, name
        assert not os.path.exists(os.path.join(MODULE, "MedSAMSegmentLib", name)), name
    cmake = open(os.path.join(MODULE, "CMakeLists.txt")).read()
    assert not any(package in cmake for package in ("medsam_evaluation", "medsam_batch", "medsam_server",
                                                     "medsam_web"))
    pyproject = open(os.path.join(ROOT, "pyproject.toml")).read()
    assert 'where = ["MedSAMSegment", "Evaluation", "Batch", "Server", "Web"]' in pyproject
    assert 'web = "medsam_web.cli:register_web"' in pyproject
    assert '[project.entry-points."medsam_segment.commands"]' in pyproject
    assert 'batch = "medsam_batch.cli:register_batch"' in pyproject
    assert 'serve = "medsam_server.cli:register_serve"' in pyproject


def test_the_core_never_imports_the_evaluation_package():
    import ast

    offenders = []
    for folder, dirs, files in os.walk(MODULE):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            tree = ast.parse(open(path, encoding="utf-8").read(), path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    imported = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    imported = [node.module or ""]
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    imported = [node.value]  # importlib.import_module("medsam_evaluation...") and the like
                else:
                    continue
                if any(module.split(".")[0].split(":")[0] in ("medsam_evaluation", "medsam_batch", "medsam_server")
                       for module in imported):
                    offenders.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert not offenders, f"the core must not import medsam_evaluation, medsam_batch or medsam_server: {offenders}"


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
    gui_files = ["MedSAMSegment.py", *(os.path.relpath(path, MODULE) for folder in QT_FOLDERS
                                       for path in sorted(glob.glob(os.path.join(MODULE, folder, "*.py"))))]
    assert "SegmentEditorMedSAMLib/SegmentEditorEffect.py" in gui_files
    for rel in gui_files:
        py_compile.compile(os.path.join(MODULE, rel), cfile=str(tmp_path / "x.pyc"), doraise=True)
    document = xml.dom.minidom.parse(os.path.join(MODULE, "Resources", "UI", "MedSAMSegment.ui"))
    names = {w.getAttribute("name") for w in document.getElementsByTagName("widget")}
    module_source = open(os.path.join(MODULE, "MedSAMSegment.py")).read()
    used = set(re.findall(r"self\.ui\.(\w+)", module_source))
    assert used <= names, f"widgets used by MedSAMSegment.py but missing in the .ui: {sorted(used - names)}"


def test_license_is_apache_2_and_packaged():
    path = os.path.join(ROOT, "LICENSE")
    assert os.path.isfile(path), "the Slicer Extensions Index needs a license file at the repository root"
    text = open(path, encoding="utf-8").read()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    for marker in ("TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION", "9. Accepting Warranty",
                   "END OF TERMS AND CONDITIONS", "http://www.apache.org/licenses/LICENSE-2.0"):
        assert marker in text
    assert "[yyyy]" not in text and "Copyright 2026 MedSAM Segment developers" in text
    assert len(text.split()) > 1500  # the full text, not the short notice
    # The extension package ships this file (Slicer's own license otherwise), and the project metadata agrees.
    assert _cmake_variables(os.path.join(ROOT, "CMakeLists.txt"))["EXTENSION_LICENSE_FILE"] == (
        "${CMAKE_CURRENT_SOURCE_DIR}/LICENSE"
    )
    top = open(os.path.join(ROOT, "CMakeLists.txt")).read()
    assert top.index("EXTENSION_LICENSE_FILE") < top.index("include(${Slicer_USE_FILE})")
    assert 'license = { text = "Apache-2.0" }' in open(os.path.join(ROOT, "pyproject.toml")).read()


def test_supported_versions_are_stated_consistently():
    from MedSAMSegmentLib.scene import dependencies

    slicer = "Slicer {}.{}".format(*dependencies.MINIMUM_SLICER_VERSION)
    python = "{}.{}".format(*dependencies.MINIMUM_PYTHON)
    pyproject = open(os.path.join(ROOT, "pyproject.toml")).read()
    assert f'requires-python = ">={python}"' in pyproject
    assert 'target-version = "py{}{}"'.format(*dependencies.MINIMUM_PYTHON) in pyproject
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert f"Python {python}+" in readme and "Python 3.9+" not in readme
    assert f"{slicer} or later" in readme
    assert f"{slicer} or later" in _s4ext()["description"]
    assert f"{slicer} or later" in _cmake_variables(os.path.join(ROOT, "CMakeLists.txt"))["EXTENSION_DESCRIPTION"]
    guide = open(os.path.join(ROOT, "docs", "slicer.md"), encoding="utf-8").read()
    assert "## Supported Slicer versions" in guide
    section = guide.split("## Supported Slicer versions", 1)[1].split("\n## ", 1)[0]
    assert f"{slicer} or later" in section and "5.8" in section and "Python 3.9" in section


def test_catalog_entry_has_only_schema_fields():
    # Slicer's catalog entry schema v1.0.1 has additionalProperties false (no description field there).
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "build_subdirectory", "enabled", "tier"}
    index = json.load(open(os.path.join(ROOT, "MedSAMExtension.json")))
    assert set(index) <= allowed


def test_qt_files_stay_thin():
    """Every Qt file (the module, the effect and their widget helpers) under QT_FILE_MAX_LINES lines."""
    paths = [os.path.join(MODULE, "MedSAMSegment.py"),
             *(path for folder in QT_FOLDERS for path in glob.glob(os.path.join(MODULE, folder, "*.py")))]
    lines = {os.path.relpath(path, MODULE): sum(1 for unused in open(path, encoding="utf-8")) for path in paths}
    assert len(lines) >= 8
    too_long = {name: count for name, count in lines.items() if count >= QT_FILE_MAX_LINES}
    assert not too_long, f"Qt files of {QT_FILE_MAX_LINES} lines or more (move widgets into helpers): {too_long}"
