"""The engine on a real CT lesion with the real LiteMedSAM: caching, decoder-only edits, propagation, cancel."""

import os

import numpy as np
import pytest
from conftest import shared_data_path
from MedSAMSegmentLib.engine import DECODED_PER_SLICE, Cancelled, EmbeddingCache, VolumeSegmenter, one_shot_cache_bytes
from MedSAMSegmentLib.geometry import KeyBox, KeyBoxSet, box_from_mask, interpolate_boxes
from MedSAMSegmentLib.metrics import dice
from MedSAMSegmentLib.models.hardware import EMBEDDING_BYTES
from MedSAMSegmentLib.settings import PUBLISHED, SegmentationSettings


def published(**changes) -> SegmentationSettings:
    """The published behaviour with ``changes`` (the engine has no defaults of its own)."""
    return SegmentationSettings(**{**PUBLISHED, **changes})


@pytest.fixture(scope="module")
def lesion():
    data = np.load(shared_data_path("ct_lesion", "CT_Lesion_000002_03_01_035-047.npz"))
    return data["imgs"], data["gts"] > 0


def keys_every(mask, step, margin=3.0):
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    chosen = sorted(set(slices[::step].tolist()) | {int(slices[-1])})
    return KeyBoxSet(0, [KeyBox(s, box_from_mask(mask[s], margin)) for s in chosen])


def test_interpolated_run_encodes_only_boxed_slices_and_reuses_embeddings(lite_model, embedding_cache, lesion):
    image, reference = lesion
    segmenter = VolumeSegmenter(lite_model, image, 0, cache=embedding_cache, batch_size=4)
    keys = keys_every(reference, 3)
    seen = []
    result = segmenter.segment(keys, published(), on_slice=lambda s, m: seen.append(s))
    first, last = keys.slice_range
    assert result.slice_range == (first, last)
    assert sorted(result.boxes) == list(range(first, last + 1)) == sorted(seen)
    assert not result.mask[:first].any() and not result.mask[last + 1 :].any()
    assert dice(result.mask, reference) > 0.76  # measured 0.785 (published behaviour, CPU)
    assert set(result.iou) == set(result.boxes)

    # Move one key box: only the slices whose interpolated box changed are decoded again, nothing re-encoded.
    moved = KeyBoxSet(0, [k if k.slice_index != last else KeyBox(k.slice_index, tuple(np.add(k.box, (2, 0, 2, 0))))
                          for k in keys.boxes])
    again = segmenter.segment(moved, published())
    assert again.encoded == 0
    previous_key = sorted(k.slice_index for k in keys.boxes)[-2]
    assert sorted(again.recomputed) == list(range(previous_key + 1, last + 1))


def test_box_sizes_reach_the_runs_boxes_and_only_slices_between_unequal_key_boxes_change(lite_model,
                                                                                         embedding_cache, lesion):
    image, reference = lesion
    segmenter = VolumeSegmenter(lite_model, image, 0, cache=embedding_cache, batch_size=4)
    keys = keys_every(reference, 5)
    linear = segmenter.segment(keys, published())
    rounded = segmenter.segment(keys, published(box_sizes="rounded"))
    assert rounded.boxes == interpolate_boxes(keys.boxes, "rounded") != linear.boxes
    assert rounded.encoded == 0  # whole slices: the same embeddings
    changed = {s for s in linear.boxes if not np.allclose(linear.boxes[s], rounded.boxes[s])}
    assert changed and not changed & {k.slice_index for k in keys.boxes}
    assert set(rounded.recomputed) == changed
    for s in set(linear.boxes) - changed:
        assert np.array_equal(linear.mask[s], rounded.mask[s])
    guided = segmenter.segment(keys, published(box_sizes="rounded", guide="mean"))
    assert guided.slice_range == rounded.slice_range and guided.mask.any()


def test_a_box_moved_back_decodes_nothing_and_the_memory_per_slice_is_bounded(lite_model, embedding_cache, lesion):
    """Each slice remembers its last DECODED_PER_SLICE decodes (box, crop, options): a box moved back to where it
    was (an undo, or another run over the same key boxes) gives the same mask without running the decoder."""
    image, reference = lesion
    segmenter = VolumeSegmenter(lite_model, image, 0, cache=embedding_cache)
    s = int(np.flatnonzero(reference.any(axis=(1, 2)))[3])
    box = box_from_mask(reference[s], 3.0)
    shifted = [tuple(np.add(box, (d, 0, d, 0))) for d in range(1, DECODED_PER_SLICE + 1)]

    def decode(b):
        return segmenter.decoder.decode({s: b}, zoom="off", retry="off")

    first = decode(box)
    assert first.recomputed == [s]
    decode(shifted[0])
    again = decode(box)
    assert again.recomputed == []
    assert np.array_equal(again.masks[s][0], first.masks[s][0]) and again.masks[s][1] == first.masks[s][1]
    assert np.array_equal(segmenter.decode({s: box})[s][0], first.masks[s][0])  # the public decode: whole slice
    for other in shifted[1:]:  # box is now the oldest of more than DECODED_PER_SLICE: forgotten
        decode(other)
    assert decode(box).recomputed == [s]


def test_box_on_every_slice_beats_a_tiny_box(lite_model, embedding_cache, lesion):
    """The annotator's box on every slice against a 5-pixel box at the centre of each: the model needs the extent."""
    image, reference = lesion
    segmenter = VolumeSegmenter(lite_model, image, 0, cache=embedding_cache)
    every = keys_every(reference, 1)
    tiny = KeyBoxSet(0, [KeyBox(k.slice_index, _centre_box(k.box, 2.0)) for k in every.boxes])
    result = segmenter.segment(every, published())
    tiny_result = segmenter.segment(tiny, published())
    assert tiny_result.encoded == 0  # the same slices: only the boxes differ
    assert dice(result.mask, reference) > 0.81  # measured 0.836
    assert dice(tiny_result.mask, reference) < 0.1  # measured 0.0: a point-sized box finds nothing


def _centre_box(box, half):
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    return (cx - half, cy - half, cx + half, cy + half)


@pytest.mark.slow
def test_propagate_from_one_box_reaches_neighbouring_slices(lite_model, embedding_cache, lesion):
    image, reference = lesion
    slices = np.flatnonzero(reference.any(axis=(1, 2)))
    middle = int(slices[len(slices) // 2])
    keys = KeyBoxSet(0, [KeyBox(middle, box_from_mask(reference[middle], 3))])
    segmenter = VolumeSegmenter(lite_model, image, 0, cache=embedding_cache)
    result = segmenter.segment(keys, published(strategy="propagate"))
    first, last = result.slice_range
    assert first < middle < last
    assert dice(result.mask, reference) > 0.5
    # every walked slice used the previous slice's mask box, so it has a mask unless the walk stopped there
    for s in range(first, last + 1):
        assert s in result.boxes


@pytest.mark.slow
def test_propagate_between_key_boxes_stays_inside_them_and_shares_crops_with_interpolate(lite_model, lesion):
    image, reference = lesion
    keys = keys_every(reference, 5)
    segmenter = VolumeSegmenter(lite_model, image, 0, cache=EmbeddingCache(), batch_size=4)
    interpolated = segmenter.segment(keys, published(zoom="union"))
    propagated = segmenter.segment(keys, published(strategy="propagate", zoom="union"))
    # The outermost key boxes bound the target, as they bound interpolate (the reference has slices beyond
    # them only when the last key is not the last target slice; keys_every includes it).
    assert propagated.slice_range == keys.slice_range == interpolated.slice_range
    assert not propagated.mask[: keys.slice_range[0]].any() and not propagated.mask[keys.slice_range[1] + 1 :].any()
    assert dice(propagated.mask, reference) > 0.5
    # Walked slices whose box fits their interpolated box's crop use that crop: encoded already.
    walked = len(propagated.boxes) - len(keys.boxes)
    assert propagated.encoded < walked, (propagated.encoded, walked)


class RecordingCache(EmbeddingCache):
    """An embedding cache that records every embedding put into it (each put is one encoded slice view)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.puts = []

    def put(self, key, value):
        self.puts.append(key)
        super().put(key, value)


@pytest.mark.slow
def test_one_shot_cache_bound_never_encodes_a_view_twice(lite_model, lesion):
    image, reference = lesion
    # Two copies of the lesion one after the other (the second one grey level brighter, so that no two slices have
    # the same pixels and one cache key): more slice views than the bound for batches of 4 holds.
    image = np.concatenate([image, np.clip(image.astype(np.int16) + 1, 0, 255).astype(np.uint8)])
    reference = np.concatenate([reference] * 2)
    cache = RecordingCache(max_memory_bytes=one_shot_cache_bytes(4))
    segmenter = VolumeSegmenter(lite_model, image, 0, cache=cache, batch_size=4)
    result = segmenter.segment(keys_every(reference, 5), published(zoom="union", guide="auto"))
    assert len(cache.puts) * EMBEDDING_BYTES > cache.max_memory_bytes  # the bound was reached ...
    assert cache._memory_bytes <= cache.max_memory_bytes
    assert len(cache.puts) == len(set(cache.puts)) == result.encoded  # ... and nothing was encoded again
    assert dice(result.mask, reference) > 0.5


def test_cancel_raises_and_returns_nothing(lite_model, lesion):
    image, reference = lesion
    segmenter = VolumeSegmenter(lite_model, image, 0, cache=EmbeddingCache(), batch_size=1)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        segmenter.segment(keys_every(reference, 3), published(), cancel=cancel)


def test_disk_cache_survives_processes_and_detects_corruption(lite_model, lesion, tmp_path):
    image, reference = lesion
    keys = KeyBoxSet(0, [KeyBox(6, box_from_mask(reference[6], 3))])
    cache_dir = str(tmp_path / "cache")
    first = VolumeSegmenter(lite_model, image, 0, cache=EmbeddingCache(cache_dir)).segment(keys, published())
    assert first.encoded == 1
    entries = [os.path.join(root, name) for root, _, names in os.walk(cache_dir) for name in names]
    assert len(entries) == 1 and not os.path.basename(entries[0]).startswith(".tmp")

    second = VolumeSegmenter(lite_model, image, 0, cache=EmbeddingCache(cache_dir)).segment(keys, published())
    assert second.encoded == 0 and np.array_equal(second.mask, first.mask)

    with open(entries[0], "r+b") as handle:  # flip bytes in the payload
        handle.seek(500)
        handle.write(b"\xff" * 16)
    third = VolumeSegmenter(lite_model, image, 0, cache=EmbeddingCache(cache_dir)).segment(keys, published())
    assert third.encoded == 1 and np.array_equal(third.mask, first.mask)

    with open(entries[0], "r+b") as handle:  # a truncated entry, as a crash mid-write would leave without rename
        handle.truncate(100)
    fourth = VolumeSegmenter(lite_model, image, 0, cache=EmbeddingCache(cache_dir)).segment(keys, published())
    assert fourth.encoded == 1 and np.array_equal(fourth.mask, first.mask)


def test_cache_keys_differ_by_model_and_pixels():
    a = np.zeros((4, 4), np.uint8)
    b = a.copy()
    b[0, 0] = 1
    assert EmbeddingCache.key("m1", a) != EmbeddingCache.key("m2", a)
    assert EmbeddingCache.key("m1", a) != EmbeddingCache.key("m1", b)
    assert EmbeddingCache.key("m1", a) != EmbeddingCache.key("m1", a.T.copy().reshape(2, 8))


OUT_OF_MEMORY_SCRIPT = """
import resource, sys, warnings
import numpy as np
from MedSAMSegmentLib.engine import VolumeSegmenter
from MedSAMSegmentLib.models import load_model

model = load_model("lite", device="cpu", backend="torch")
size = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize")][0] * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + 1_200_000_000, resource.RLIM_INFINITY))
volume = np.random.default_rng(0).integers(0, 255, (8, 128, 128), dtype=np.uint8)
segmenter = VolumeSegmenter(model, volume, 0, batch_size=8)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    encoded = segmenter.ensure_embeddings(range(8))
print("encoded", encoded, "batch", segmenter.batch_size)
print("\\n".join(str(w.message) for w in caught if "out of memory" in str(w.message)))
"""


@pytest.mark.slow
def test_out_of_memory_halves_the_batch_until_it_fits():
    """A real allocation failure (address space limited to 1.2 GB more than the loaded model, one inference thread:
    a batch of 8 slices does not fit, one of 2 does) is recovered from."""
    import subprocess
    import sys

    env = {**os.environ, "MEDSAM_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # each thread adds address space
    done = subprocess.run([sys.executable, "-c", OUT_OF_MEMORY_SCRIPT], capture_output=True, encoding="utf-8",
                          timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "encoded 8" in done.stdout
    assert "retrying with batches of 4 slices" in done.stdout
    batch = int(done.stdout.split("batch ")[1].split()[0])
    assert 1 <= batch < 8


def test_spilled_embeddings_come_back_from_a_private_folder_removed_with_the_cache():
    import gc

    cache = EmbeddingCache(max_memory_bytes=2 * 4096, spill=True)
    values = {f"k{n}": np.full((1, 32, 32), n, np.float32) for n in range(4)}  # 4 KiB each: two fit in memory
    for key, value in values.items():
        cache.put(key, value)
    folder = cache._spill_folder.name
    assert sorted(os.listdir(folder)) == ["k0.npy", "k1.npy"]
    for key, value in values.items():
        assert cache.contains(key)
        np.testing.assert_array_equal(cache.get(key), value)
    assert (cache.hits, cache.misses) == (4, 0) and cache.get("other") is None
    del cache
    gc.collect()
    assert not os.path.exists(folder)
    assert EmbeddingCache(max_memory_bytes=4096)._spill_folder is None  # without spill nothing goes to disk
