"""Rebuild the extra development cases in this folder from fetched public repositories.

Usage:
    python make_devset.py [--mirror /work/.mirror] [--out DIR]

Inputs are read from bare git snapshots (``<mirror>/<owner>+<name>/repo``) with ``git show``.
Every output keeps the source's spacing, origin and direction; crops are index crops
(``SimpleITK.RegionOfInterest``), so the physical position of each voxel is unchanged.
The data is for tests and studies only; it is never bundled into the extension.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent

# MSD Task04 hippocampus, as committed in the Udacity nd320 starter repository.
HIPPO_REPO = "udacity+nd320-c3-3d-imaging-starter"
HIPPO_COMMIT = "895fee683624aafe2033521f4d9b6d99accd66d5"
HIPPO_IDS = ["001", "003", "004", "006", "007", "008", "011", "014", "015", "017", "019"]
# subjects that also get separate anterior / posterior cases
HIPPO_PART_IDS = ["003", "008", "014", "019"]


def git_show(mirror: Path, repo: str, commit: str, path: str, dest: Path) -> Path:
    """Write ``commit:path`` of the bare snapshot ``mirror/repo/repo`` to ``dest`` and return ``dest``."""
    git_dir = mirror / repo / "repo"
    data = subprocess.run(
        ["git", f"--git-dir={git_dir}", "show", f"{commit}:{path}"], check=True, capture_output=True
    ).stdout
    if not data:
        raise RuntimeError(f"{repo}:{path} is empty in the snapshot (file too large or Git LFS)")
    dest.write_bytes(data)
    return dest


def crop_to_target(
    image: sitk.Image, label: sitk.Image, values: list[int] | None, margin_ijk: tuple[int, int, int]
) -> tuple[sitk.Image, sitk.Image]:
    """Crop image and label to the target's bounding box plus a margin (i, j, k voxels), clipped to the volume.

    A margin of -1 on an axis keeps that axis whole.
    """
    arr = sitk.GetArrayFromImage(label)
    mask = arr > 0 if values is None else np.isin(arr, values)
    if not mask.any():
        raise ValueError("empty target")
    size = image.GetSize()
    lo: list[int] = []
    hi: list[int] = []
    for ijk in range(3):
        axis = 2 - ijk  # numpy axis of ITK index ijk
        other = tuple(a for a in range(3) if a != axis)
        idx = np.nonzero(mask.any(axis=other))[0]
        m = margin_ijk[ijk]
        if m < 0:
            lo.append(0)
            hi.append(size[ijk])
        else:
            lo.append(max(0, int(idx[0]) - m))
            hi.append(min(size[ijk], int(idx[-1]) + m + 1))
    extent = [h - low for low, h in zip(lo, hi)]
    return sitk.RegionOfInterest(image, extent, lo), sitk.RegionOfInterest(label, extent, lo)


def make_hippocampus(mirror: Path, out: Path, tmp: Path) -> list[dict]:
    """MSD Task04 hippocampus MR: the volumes are already small crops (about 35x50x35), kept whole."""
    group = "hippocampus"
    cases: list[dict] = []
    (out / group).mkdir(parents=True, exist_ok=True)
    for sid in HIPPO_IDS:
        img = sitk.ReadImage(
            str(
                git_show(
                    mirror,
                    HIPPO_REPO,
                    HIPPO_COMMIT,
                    f"data/TrainingSet/images/hippocampus_{sid}.nii.gz",
                    tmp / f"hip_img_{sid}.nii.gz",
                )
            )
        )
        lab = sitk.ReadImage(
            str(
                git_show(
                    mirror,
                    HIPPO_REPO,
                    HIPPO_COMMIT,
                    f"data/TrainingSet/labels/hippocampus_{sid}.nii.gz",
                    tmp / f"hip_lab_{sid}.nii.gz",
                )
            )
        )
        lab = sitk.Cast(lab, sitk.sitkUInt8)
        lab.CopyInformation(img)
        img_rel = f"{group}/hippocampus_{sid}.nii.gz"
        lab_rel = f"{group}/hippocampus_{sid}_label.nii.gz"
        sitk.WriteImage(img, str(out / img_rel), useCompression=True)
        sitk.WriteImage(lab, str(out / lab_rel), useCompression=True)
        targets = [("whole", [1, 2], "hippocampus (anterior + posterior), T1w MR, 1 mm")]
        if sid in HIPPO_PART_IDS:
            targets += [
                ("anterior", [1], "anterior hippocampus (head), T1w MR, 1 mm"),
                ("posterior", [2], "posterior hippocampus (body and tail), T1w MR, 1 mm"),
            ]
        for suffix, values, target in targets:
            cases.append(
                {
                    "name": f"{group}_{sid}_{suffix}",
                    "group": group,
                    "image": img_rel,
                    "label": lab_rel,
                    "label_values": values,
                    "modality": "MR",
                    "slice_axis": 0,
                    "target": target,
                    "ground_truth": "expert (Medical Segmentation Decathlon Task04, Vanderbilt manual tracing)",
                }
            )
    return cases


def main() -> None:
    """Build every group and write cases.json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mirror", type=Path, default=Path("/work/.mirror"))
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    cases: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        cases += make_hippocampus(args.mirror, args.out, tmp)
    (args.out / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    print(f"{len(cases)} cases written to {args.out / 'cases.json'}")


if __name__ == "__main__":
    main()
