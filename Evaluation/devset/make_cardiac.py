"""Rebuild the ``cardiac`` group: short-axis cine MR of the left ventricle with expert contours (Sunnybrook).

Source: the Sunnybrook Cardiac Data subset ``final_data/`` (5 heart-failure patients, SC-HF-I-1, -2, -4, -5, -6;
GE 1.5 T cine SSFP, 256x256, 20 phases per slice) as committed in the public repository
``kwu93/image-segmentation`` (commit ``932d305f5a4ebdf7f2873cc6723a4e5e919efad7``). ``dicoms/SCD0000N01/<n>.dcm``
is image n of the cine stack (slice (n - 1) // 20, phase (n - 1) % 20), ``link.csv`` maps the DICOM folders to the
original patient ids, and ``contourfiles/<id>/i-contours/IM-0001-<nnnn>-icontour-manual.txt`` (endocardium) and
``o-contours/...-ocontour-manual.txt`` (epicardium) are the expert contours of image nnnn, as x y pixel coordinates.

Usage (needs pydicom, numpy, scikit-image and SimpleITK, e.g. a scratch venv):
    python make_cardiac.py [--mirror /work/.mirror] [--out DIR]

For each patient the cardiac phase that has both endocardial and epicardial contours (end-diastole) is stacked into a
3D volume (slices sorted along the normal of the image plane; origin, spacing and direction from the DICOM position
and orientation). Label map (uint8): 1 = LV blood pool (inside the endocardial contour), 2 = LV myocardium (inside the
epicardial contour, outside the endocardial one). Label 2 and a myocardium case are only made where every slice
with an endocardial contour also has an epicardial one and the epicardium encloses the endocardium (at least 98 % of
its area) on every slice. Not so for SC-HF-I-6: its epicardial contours miss 2 slices and enclose only 39-80 % of the
endocardium (they do not fit this image), so that patient gets the blood-pool case only.
Image and label are cropped in-plane to the LV's bounding box plus 20 voxels (all slices kept). The cases are
printed as JSON; they are not added to ``cases.json`` by this script.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from skimage.draw import polygon

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_devset import crop_to_target, git_show  # noqa: E402

GROUP = "cardiac"
REPO = "kwu93+image-segmentation"
COMMIT = "932d305f5a4ebdf7f2873cc6723a4e5e919efad7"
ROOT = "final_data"
PHASES = 20
MARGIN_IJK = (20, 20, -1)
MIN_ENDO_INSIDE_EPI = 0.98  # fraction of the endocardial area inside the epicardial contour, per slice
GT_NOTE = (
    "expert (Sunnybrook Cardiac Data, manual endocardial and epicardial contours; Radau et al. 2009), "
    "rasterised from the contour files"
)


def git_ls(mirror: Path, path: str) -> list[str]:
    """Return the file paths under ``path`` in the snapshot."""
    git_dir = mirror / REPO / "repo"
    out = subprocess.run(
        ["git", f"--git-dir={git_dir}", "ls-tree", "-r", "--name-only", COMMIT, path],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()


def read_contour(text: str, shape: tuple[int, int]) -> np.ndarray:
    """Fill one closed contour (lines of ``x y`` pixel coordinates) on a ``shape`` (rows, columns) plane."""
    points = np.array([[float(v) for v in line.split()] for line in text.splitlines() if line.strip()])
    rows, cols = polygon(points[:, 1], points[:, 0], shape=shape)
    plane = np.zeros(shape, dtype=bool)
    plane[rows, cols] = True
    return plane


def stack_phase(files: dict[int, Path], n_slices: int, phase: int) -> tuple[sitk.Image, list[int]]:
    """Stack the images of one cine phase into a 3D image; return it and the image number of each slice."""
    numbers = [s * PHASES + phase + 1 for s in range(n_slices)]
    slices = [pydicom.dcmread(files[n]) for n in numbers]
    orient = np.array(slices[0].ImageOrientationPatient, dtype=float)
    row_dir, col_dir = orient[:3], orient[3:]
    normal = np.cross(row_dir, col_dir)
    for ds, number in zip(slices, numbers):
        if not np.allclose(np.array(ds.ImageOrientationPatient, dtype=float), orient, atol=1e-4):
            raise ValueError("slices differ in orientation")
        if int(ds.InstanceNumber) != number:
            raise ValueError("file number and InstanceNumber differ")
    pos = np.array([np.array(ds.ImagePositionPatient, dtype=float) for ds in slices])
    order = np.argsort(pos @ normal)
    pos = pos[order]
    numbers = [numbers[i] for i in order]
    slices = [slices[i] for i in order]
    steps = np.diff(pos @ normal)
    if np.ptp(steps) > 0.05 or not np.allclose(np.cross(np.diff(pos, axis=0), normal), 0, atol=0.05):
        raise ValueError("slices are not evenly spaced along the normal")
    arr = np.stack([ds.pixel_array.astype(np.int16) for ds in slices])
    image = sitk.GetImageFromArray(arr)
    spacing = [float(v) for v in slices[0].PixelSpacing]  # row spacing, column spacing
    image.SetSpacing((spacing[1], spacing[0], float(steps.mean())))
    image.SetOrigin(tuple(float(v) for v in pos[0]))
    image.SetDirection(tuple(np.column_stack([row_dir, col_dir, normal]).ravel().tolist()))
    return image, numbers


def make_cardiac(mirror: Path, out: Path, tmp: Path) -> list[dict]:
    """Write one cropped end-diastolic volume and label map per patient under ``out/cardiac``; return the cases."""
    link = git_show(mirror, REPO, COMMIT, f"{ROOT}/link.csv", tmp / "link.csv").read_text().split()[1:]
    cases: list[dict] = []
    (out / GROUP).mkdir(parents=True, exist_ok=True)
    for line in link:
        dicom_id, patient = line.split(",")
        folder = tmp / dicom_id
        folder.mkdir()
        files = {}
        for path in git_ls(mirror, f"{ROOT}/dicoms/{dicom_id}/"):
            name = path.rsplit("/", 1)[1]
            files[int(name.removesuffix(".dcm"))] = git_show(mirror, REPO, COMMIT, path, folder / name)
        n_slices = len(files) // PHASES
        outer = git_ls(mirror, f"{ROOT}/contourfiles/{patient}/o-contours/")
        outer_numbers = {int(p.rsplit("/", 1)[1].split("-")[2]) for p in outer}
        phases = {(n - 1) % PHASES for n in outer_numbers}
        if len(phases) != 1:
            raise ValueError(f"{patient}: epicardial contours on several phases")
        phase = phases.pop()
        image, numbers = stack_phase(files, n_slices, phase)
        label = np.zeros(sitk.GetArrayFromImage(image).shape, dtype=np.uint8)
        shape = label.shape[1:]
        inner = git_ls(mirror, f"{ROOT}/contourfiles/{patient}/i-contours/")
        inner_numbers = {int(p.rsplit("/", 1)[1].split("-")[2]) for p in inner}
        if not outer_numbers <= inner_numbers:
            raise ValueError(f"{patient}: epicardial contour without endocardial contour")
        endo = np.zeros(label.shape, dtype=bool)
        epi = np.zeros(label.shape, dtype=bool)
        for k, number in enumerate(numbers):
            stem = f"{ROOT}/contourfiles/{patient}/%s-contours/IM-0001-{number:04d}-%scontour-manual.txt"
            if number in outer_numbers:
                o_text = git_show(mirror, REPO, COMMIT, stem % ("o", "o"), tmp / "o.txt").read_text()
                epi[k] = read_contour(o_text, shape)
            if number in inner_numbers:
                i_text = git_show(mirror, REPO, COMMIT, stem % ("i", "i"), tmp / "i.txt").read_text()
                endo[k] = read_contour(i_text, shape)
        # the epicardium must enclose the endocardium on every slice, and be drawn wherever the endocardium is
        inside = [(endo[k] & epi[k]).sum() / endo[k].sum() for k in range(len(numbers)) if endo[k].any()]
        myo_ok = min(inside) >= MIN_ENDO_INSIDE_EPI and inner_numbers & set(numbers) == outer_numbers
        if myo_ok:
            label[epi] = 2
        label[endo] = 1
        label_img = sitk.GetImageFromArray(label)
        label_img.CopyInformation(image)
        image, label_img = crop_to_target(image, label_img, [1, 2], MARGIN_IJK)
        stem = f"scd_{patient.lower().replace('-', '_')}_ed"
        img_rel, lab_rel = f"{GROUP}/{stem}.nii.gz", f"{GROUP}/{stem}_label.nii.gz"
        sitk.WriteImage(image, str(out / img_rel), useCompression=True)
        sitk.WriteImage(label_img, str(out / lab_rel), useCompression=True)
        sp = image.GetSpacing()
        res = f"{sp[0]:.2f} x {sp[1]:.2f} x {sp[2]:.1f} mm"
        parts = [("lv_cavity", [1], "left-ventricle blood pool (endocardial contour)")]
        if myo_ok:
            parts.append(
                ("lv_myocardium", [2], "left-ventricle myocardium (between endocardial and epicardial contours)")
            )
        for part, values, what in parts:
            cases.append(
                {
                    "name": f"{GROUP}_{stem}_{part}",
                    "group": GROUP,
                    "image": img_rel,
                    "label": lab_rel,
                    "label_values": values,
                    "modality": "MR",
                    "slice_axis": 0,
                    "target": f"{what}, end-diastole, short-axis cine SSFP MR (heart failure), {res}",
                    "ground_truth": GT_NOTE,
                }
            )
    return cases


def main() -> None:
    """Build the group and print its case entries."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mirror", type=Path, default=Path("/work/.mirror"))
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        cases = make_cardiac(args.mirror, args.out, Path(tmp_dir))
    print(json.dumps(cases, indent=1))


if __name__ == "__main__":
    main()
