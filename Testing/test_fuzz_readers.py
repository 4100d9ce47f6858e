"""Issue 6, bounded fuzz runs (hypothesis, fixed example counts, well under a minute): the box-file and markups
readers and the key-box geometry accept clean input or raise only their documented error types."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from MedSAMSegmentLib import intensity, io
from MedSAMSegmentLib.geometry import GeometryError, KeyBox, KeyBoxSet, interpolate_boxes, validate_key_boxes
from MedSAMSegmentLib.io import markups_file
from MedSAMSegmentLib.io.markup_boxes import key_box_from_line, key_box_from_roi

pytestmark = pytest.mark.filterwarnings("ignore::MedSAMSegmentLib.geometry.BoxWarning")
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
SHAPE = (11, 40, 50)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=5))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                            st.dictionaries(st.text(max_size=6), inner, max_size=5)),
                           max_leaves=20)
numbers = st.one_of(st.integers(-100, 200), st.floats(-100, 200, allow_nan=False), st.just(float("nan")),
                    st.text(max_size=2), st.none(), st.booleans())
box_entries = st.fixed_dictionaries({"slice": numbers, "box": st.one_of(st.lists(numbers, min_size=0, max_size=6),
                                                                        numbers)})
box_documents = st.one_of(
    json_values,
    st.fixed_dictionaries({"slice_axis": numbers, "boxes": st.one_of(st.lists(box_entries, max_size=4), numbers)}),
)


def _write(tmp_path_factory, document) -> str:
    path = tmp_path_factory.mktemp("fuzz") / "boxes.json"
    path.write_text(json.dumps(document, allow_nan=True))
    return str(path)


@FUZZ
@given(document=box_documents)
def test_box_json_gives_key_boxes_or_input_error(tmp_path_factory, document):
    path = _write(tmp_path_factory, document)
    try:
        keys = io.read_box_json(path, SHAPE)
    except io.InputError:
        return
    assert isinstance(keys, KeyBoxSet) and keys.slice_axis in (0, 1, 2) and keys.boxes
    assert all(np.all(np.isfinite(k.box)) and isinstance(k.slice_index, int) for k in keys.boxes)
    try:  # and the checked set is clean, or refused with a GeometryError
        clean = validate_key_boxes(keys, SHAPE)
    except GeometryError:
        return
    for key in clean.boxes:
        x0, y0, x1, y1 = key.box
        assert x0 < x1 and y0 < y1


@FUZZ
@given(data=st.binary(max_size=200))
def test_box_reader_on_random_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "boxes.json"
    path.write_bytes(data)
    try:
        io.read_box_json(str(path), SHAPE)
    except io.InputError:
        pass


points = st.lists(numbers, min_size=0, max_size=4)
markups = st.fixed_dictionaries(
    {"type": st.sampled_from(["ROI", "Line", "Fiducial", "", 3])},
    optional={
        "coordinateSystem": st.sampled_from(["LPS", "RAS", "XYZ", 1]),
        "center": points, "size": points, "orientation": st.lists(numbers, max_size=10),
        "roiType": st.sampled_from(["Box", "BoundingBox", "Sphere"]),
        "controlPoints": st.one_of(numbers, st.lists(st.one_of(numbers, st.fixed_dictionaries(
            {"position": points}, optional={"positionStatus": st.sampled_from(["defined", "undefined"])})),
            max_size=3)),
    },
)
markups_documents = st.one_of(json_values, st.fixed_dictionaries({"markups": st.one_of(st.lists(markups, max_size=3),
                                                                                      numbers)}))


@FUZZ
@given(document=markups_documents)
def test_markups_reader_gives_key_boxes_or_geometry_error(tmp_path_factory, document):
    path = tmp_path_factory.mktemp("fuzz") / "boxes.mrk.json"
    path.write_text(json.dumps(document, allow_nan=True))
    try:
        pairs = markups_file.read_markups_key_boxes(str(path), np.diag([0.5, 0.5, 2.0, 1.0]), SHAPE)
    except GeometryError:  # MarkupsFileError is a GeometryError
        return
    for axis, key in pairs:
        assert axis in (0, 1, 2) and isinstance(key, KeyBox) and 0 <= key.slice_index < SHAPE[axis]


finite = st.floats(-1e3, 1e3, allow_nan=False)
anything = st.floats(allow_nan=True, allow_infinity=True)


@FUZZ
@given(center=st.lists(anything, min_size=3, max_size=3), size=st.lists(anything, min_size=3, max_size=3),
       angles=st.lists(finite, min_size=3, max_size=3), axis=st.sampled_from([None, 0, 1, 2]))
def test_roi_and_line_conversion_give_a_box_or_geometry_error(center, size, angles, axis):
    from scipy.spatial.transform import Rotation

    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    matrix[:3, 3] = center
    ras_to_ijk = np.diag([2.0, 2.0, 0.5, 1.0])
    for convert in (lambda: key_box_from_roi((0, 0, 0), size, matrix, ras_to_ijk, SHAPE, axis),
                    lambda: key_box_from_line(center, size, ras_to_ijk, SHAPE, axis)):
        try:
            with np.errstate(all="ignore"):
                got_axis, key = convert()
        except GeometryError:
            continue
        assert got_axis in (0, 1, 2) and 0 <= key.slice_index < SHAPE[got_axis]


@FUZZ
@given(keys=st.lists(st.tuples(st.integers(-3, 14), st.lists(anything, min_size=4, max_size=4)), max_size=5),
       axis=st.integers(0, 2))
def test_validate_and_interpolate_random_key_boxes(keys, axis):
    key_set = KeyBoxSet(axis, [KeyBox(s, tuple(b)) for s, b in keys])
    try:
        clean = validate_key_boxes(key_set, SHAPE)
    except GeometryError:
        return
    boxes = interpolate_boxes(clean.boxes)
    first, last = clean.slice_range
    assert sorted(boxes) == list(range(first, last + 1))
    rows = SHAPE[[a for a in range(3) if a != axis][0]]
    cols = SHAPE[[a for a in range(3) if a != axis][1]]
    for x0, y0, x1, y1 in boxes.values():
        assert 0 <= x0 < x1 <= cols - 1 and 0 <= y0 < y1 <= rows - 1


def test_large_volume_is_normalised_without_whole_float_copies():
    """A 64 MB int16 volume: the normalisation's numpy peak stays well under one float32 copy (128 MB)."""
    volume = np.random.default_rng(0).integers(-1000, 1000, (128, 512, 512), dtype=np.int16)
    for modality in ("CT", "MR"):
        tracemalloc.start()
        result = intensity.normalise_volume(volume, modality)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert result.shape == volume.shape and result.dtype == np.uint8
        limit = volume.size * (1 if modality == "CT" else 3) + 5 * 4 * intensity.CHUNK_VOXELS
        assert peak < limit, (modality, peak / 2**20)
