"""A bare install: with an optional dependency missing, ``medsam-segment --help`` still works and lists every
command, a command whose extra is missing marked as not installed, and running that command names the extra in one
line and exits 2. Each optional dependency is hidden from a real ``medsam-segment`` process by a ``sitecustomize``
whose import finder refuses it, as if it were not installed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from MedSAMSegmentLib.extras import extra_providing

SCRIPT = os.path.join(os.path.dirname(sys.executable), "medsam-segment")
COMMANDS = ("segment", "demo", "batch", "benchmark", "evaluate", "finetune", "serve", "web")
SERVE_LINE = "medsam-segment: error: serve: needs the serve extra: pip install 'medsam-segment[serve]'"
WEB_LINE = "medsam-segment: error: web: needs the web extra: pip install 'medsam-segment[web]'"

#: What hides the modules named in $HIDDEN_MODULES (top-level names, comma-separated).
HIDER = '''
import os, sys

class _Hidden:
    names = set(filter(None, os.environ.get("HIDDEN_MODULES", "").split(",")))

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Hidden())
'''

#: Each optional dependency (by the extra that brings it) and the commands that cannot load without it.
OPTIONAL = {
    "fastapi": ("serve", {"serve"}),
    "trame_slicer": ("web", {"web"}),
    "uvicorn": ("serve", {"serve"}),
    "ray": ("ray", set()),
    "matplotlib": ("eval", set()),
    "itk": ("eval", set()),
    "segment_anything": ("vit-b", set()),
    "openvino": ("fast", set()),
    "psutil": ("fast", set()),
}


@pytest.fixture(scope="module")
def hider(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hider")
    (folder / "sitecustomize.py").write_text(HIDER)
    return str(folder)


def _run(hider: str, hidden, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HIDDEN_MODULES": ",".join(hidden), "COLUMNS": "200",
           "PYTHONPATH": os.pathsep.join([hider, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(list(args), env=env, capture_output=True, encoding="utf-8", timeout=120, check=False)


def test_each_optional_module_is_named_by_the_extra_that_brings_it():
    for module, (extra, _) in OPTIONAL.items():
        assert extra_providing(module) == extra, module
    assert extra_providing("ray", prefer=("serve-ray",)) == "serve-ray"
    assert extra_providing("numpy") is None  # a dependency of every install


@pytest.mark.parametrize("hidden", [*([m] for m in OPTIONAL), list(OPTIONAL)], ids=[*OPTIONAL, "all"])
def test_the_command_line_works_without_each_optional_dependency(hider, hidden):
    for module in hidden:  # the module really is hidden
        refused = _run(hider, hidden, sys.executable, "-c", f"import {module}")
        assert refused.returncode == 1 and f"No module named '{module}'" in refused.stderr, refused.stderr
    helped = _run(hider, hidden, SCRIPT, "--help")
    assert helped.returncode == 0 and not helped.stderr, helped.stderr
    listed = {line.split()[0]: line for line in helped.stdout.splitlines() if line.startswith("    ")}
    assert set(COMMANDS) <= set(listed), helped.stdout
    skipped = set().union(*(OPTIONAL[m][1] for m in hidden))
    for command in COMMANDS:
        assert ("(not installed)" in listed[command]) == (command in skipped), listed[command]
    if "web" in skipped:
        ran = _run(hider, hidden, SCRIPT, "web", "--port", "8123")
        assert (ran.returncode, ran.stdout, ran.stderr.splitlines()) == (2, "", [WEB_LINE]), ran
    if "serve" in skipped:
        assert "(not installed) needs the serve extra: pip install 'medsam-segment[serve]'" in listed["serve"]
        for args in (["serve"], ["serve", "--port", "8000", "--help"], ["--debug", "serve", "--replicas", "2"]):
            ran = _run(hider, hidden, SCRIPT, *args)
            assert (ran.returncode, ran.stdout, ran.stderr.splitlines()) == (2, "", [SERVE_LINE]), (args, ran)
    elif "ray" in hidden:
        ran = _run(hider, hidden, SCRIPT, "serve", "--replicas", "2", "--port", "1")
        assert ran.returncode == 2 and ran.stderr.splitlines() == [
            "medsam-segment: error: serve --replicas/--ray-address: needs the serve-ray extra: pip install "
            "'medsam-segment[serve-ray]'"], ran.stderr
