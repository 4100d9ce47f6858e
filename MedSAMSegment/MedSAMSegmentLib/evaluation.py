"""``medsam-segment evaluate``: simulate an annotator on real cases, run our pipeline and the baselines, report.

For each case of a ``cases.json`` (format of ``shared/data/cases.json``; paths relative to the file) and each
key-slice spacing N, :mod:`simulate` draws key boxes from the reference mask every N slices (mask box + margin,
optional seeded jitter) along the case's ``slice_axis``. The methods:

=====================  =====================================================================================
``interpolate``        ours: :func:`pipeline.make_segmenter` + ``segment(strategy="interpolate")``, the path
                       of ``medsam-segment segment`` (``pipeline.run_segmentation`` is exactly these two calls)
``propagate``          ours, ``strategy="propagate"``
``every_slice``        our engine with the annotator's box on every target slice (box-prompting upper bound)
``recipe``             the published LiteMedSAM per-slice recipe (:class:`baselines.PublishedRecipe`) with the
                       key boxes interpolated (issue 7's "recipe" column)
``recipe_every_slice`` the published recipe with the box on every target slice (issue 7's goal reference)
``filled_boxes``       the interpolated key boxes filled, no model
``tight_boxes``        tight key boxes (each key slice's own mask box, no margin) interpolated and filled, no
                       model (issue 7's "tight box filled" column)
``tight_every_slice``  every slice's own mask box filled (a perfect annotator drawing every slice), no model
``contours``           the reference contour on the key slices, filled between by ITK's morphological contour
                       interpolation (Slicer's "Fill between slices"): the manual workflow; costs contours
=====================  =====================================================================================

Speed: each case's slices are encoded once by the engine and the embeddings are shared by every engine method
and spacing (the engine's :class:`~engine.EmbeddingCache`). The recipe reuses the engine's embeddings only when a
check on the case's first target slice shows that its own encoder gives the same embedding (``recipe="shared"``,
the default); otherwise, or with ``recipe="full"``, it encodes every slice itself. Likewise it decodes its boxes
through the engine's batched decoder only when, on the case's first, middle and last target slices, that gives
the recipe's own masks (at most :data:`SAME_MASK_PIXELS` of a mask's pixels differ); then the recipe's seconds
count its own encoder and decoder times per slice, measured on those slices. ``seconds`` is the wall time of the
run with embeddings already computed; ``seconds_cold`` adds the encoder time of the slices it segmented (measured
per case).

Cases run side by side in worker processes, one per CPU core by default (:func:`evaluation_workers`), each
pinned to its core with its own model and cache; the seconds columns are then one core's. The cases drawn on one
image run one after another on one cache (:func:`image_groups`), so the image's slices are encoded once.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import fnmatch
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import baselines, metrics, simulate
from .geometry import Box, KeyBoxSet, interpolate_boxes, put_slice, take_slice

MODEL_METHODS = ("interpolate", "propagate", "every_slice")
RECIPE_METHODS = ("recipe", "recipe_every_slice")
FREE_METHODS = ("filled_boxes", "tight_boxes", "tight_every_slice", "contours")
METHODS = MODEL_METHODS + RECIPE_METHODS + FREE_METHODS
#: Methods that do not depend on the key-slice spacing (run once per case, reported at every spacing).
SPACING_FREE = ("every_slice", "recipe_every_slice", "tight_every_slice")
DEFAULT_SPACINGS = (3, 5, 10)
NSD_TOLERANCE_MM = metrics.DEFAULT_NSD_TOLERANCE_MM
#: Relative L2 difference below which the recipe's embedding counts as the engine's (numerically the same).
SAME_EMBEDDING_TOLERANCE = 1e-5
#: The recipe's boxes are decoded by the engine's batched decoder when, on sample slices, at most this fraction of
#: the recipe's mask pixels differ (the decoders' logits agree within 2e-5: a pixel changes side only at |logit|
#: below that).
SAME_MASK_PIXELS = 1e-3

CSV_FIELDS = (
    "case", "modality", "method", "spacing", "dsc", "nsd", "boxes_drawn", "contours_drawn", "slices_segmented",
    "slices_encoded", "seconds", "seconds_cold", "flagged",
)


@dataclass
class Case:
    name: str
    image: str
    label: str
    label_values: Optional[List[int]]
    modality: str
    slice_axis: int
    target: str = ""


@dataclass
class Row:
    case: str
    modality: str
    method: str
    spacing: int
    dsc: float
    nsd: float
    boxes_drawn: int
    contours_drawn: int
    slices_segmented: int
    slices_encoded: int = 0
    seconds: float = 0.0
    seconds_cold: float = 0.0
    flagged: int = 0

    def as_dict(self) -> Dict[str, object]:
        return {name: getattr(self, name) for name in CSV_FIELDS}


@dataclass
class WorstSlice:
    dsc: float
    case: str
    method: str
    spacing: int
    slice_index: int
    image: np.ndarray
    reference: np.ndarray
    prediction: np.ndarray
    box: Optional[Box]


@dataclass
class EvaluationReport:
    rows: List[Row] = field(default_factory=list)
    worst: List[WorstSlice] = field(default_factory=list)
    seconds: float = 0.0
    out_dir: str = ""
    notes: List[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------
# Cases


def load_cases(cases_json: str, case_filter: Optional[Sequence[str]] = None) -> List[Case]:
    """Cases from a ``cases.json``; ``case_filter`` keeps names matching any pattern (glob or substring)."""
    with open(cases_json, encoding="utf-8") as handle:
        entries = json.load(handle)
    if isinstance(entries, dict):
        entries = entries.get("cases", [])
    base = os.path.dirname(os.path.abspath(cases_json))
    cases = []
    for entry in entries:
        name = entry["name"]
        if case_filter and not any(fnmatch.fnmatch(name, p) or p in name for p in case_filter):
            continue
        cases.append(
            Case(
                name=name,
                image=os.path.join(base, entry["image"]),
                label=os.path.join(base, entry["label"]),
                label_values=entry.get("label_values"),
                modality=entry.get("modality", "auto"),
                slice_axis=int(entry.get("slice_axis", 0)),
                target=entry.get("target", ""),
            )
        )
    if not cases:
        raise ValueError(f"no cases selected from {cases_json} (filter {list(case_filter or [])})")
    return cases


def modality_setting(case: Case, array: np.ndarray) -> str:
    """The ``--modality`` a user would pick: 8-bit CT (MedSAM ``.npz``) is already windowed, so ``none``."""
    modality = (case.modality or "auto").upper()
    if modality == "CT" and array.dtype == np.uint8:
        return "none"
    if modality in ("CT", "MR"):
        return modality
    return "auto"


# ---------------------------------------------------------------------------------------------------------
# The evaluation


def evaluate(
    cases_json: str,
    spacings: Sequence[int] = DEFAULT_SPACINGS,
    strategies: Sequence[str] = METHODS,
    out_dir: str = "evaluation",
    margin: float = simulate.DEFAULT_MARGIN,
    jitter: float = 0,
    seed: int = 0,
    case_filter: Optional[Sequence[str]] = None,
    recipe: str = "shared",
    model=None,
    cache=None,
    model_name: str = "lite",
    checkpoint: Optional[str] = None,
    device: str = "auto",
    batch_size: Optional[int] = None,
    montage_method: str = "interpolate",
    montage_spacing: Optional[int] = None,
    n_worst: int = 12,
    log=print,
    command: Optional[str] = None,
    settings: Optional[Dict[str, str]] = None,
    precision: str = "auto",
    backend: str = "auto",
    workers: object = "auto",
) -> EvaluationReport:
    """Run the evaluation and write ``results.csv``, ``results.md`` and PNG plots into ``out_dir``.

    ``strategies`` picks methods from :data:`METHODS`; ``recipe`` is ``shared`` (reuse the engine's embeddings
    when numerically the same), ``full`` (the recipe encodes every slice itself, every run) or ``skip``.
    ``model`` and ``cache`` (an :class:`engine.EmbeddingCache`) may be given to share them with the caller.
    ``settings`` overrides the accuracy options of :class:`pipeline.SegmentationSettings` for ``interpolate``,
    ``propagate`` and ``every_slice`` (e.g. ``pipeline.PUBLISHED``); ``precision`` and ``backend`` choose the
    encoder's numeric path (:func:`models.load_model`). ``workers`` processes evaluate cases side by side
    (:func:`evaluation_workers`; ``auto``: one per core on a CPU); a given ``model`` or ``cache`` runs here.
    """
    from . import pipeline

    methods = [m for m in METHODS if m in set(strategies)]
    unknown = set(strategies) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; choose from {', '.join(METHODS)}")
    if recipe not in ("shared", "full", "skip"):
        raise ValueError(f"recipe must be shared, full or skip, not {recipe!r}")
    if recipe == "skip":
        methods = [m for m in methods if m not in RECIPE_METHODS]
    spacings = sorted({int(s) for s in spacings})
    if not spacings or spacings[0] < 1:
        raise ValueError(f"key-slice spacings must be positive integers, got {spacings}")
    if montage_spacing is None:
        montage_spacing = 5 if 5 in spacings else spacings[len(spacings) // 2]
    cases = load_cases(cases_json, case_filter)
    os.makedirs(out_dir, exist_ok=True)
    needs_model = any(m in MODEL_METHODS + RECIPE_METHODS for m in methods)
    started = time.perf_counter()
    report = EvaluationReport(out_dir=out_dir)
    overrides = dict(settings or {})
    unknown_options = set(overrides) - set(pipeline.PUBLISHED)
    if unknown_options:
        raise ValueError(f"unknown accuracy option(s) {sorted(unknown_options)}; "
                         f"choose from {', '.join(pipeline.PUBLISHED)}")
    chosen = dataclasses.replace(pipeline.SegmentationSettings(), **overrides)
    report.notes.append("our methods' options: " + ", ".join(f"{name}={getattr(chosen, name)}"
                                                             for name in pipeline.PUBLISHED) +
                        (" (the defaults)" if chosen == pipeline.SegmentationSettings() else ""))
    if any(m in RECIPE_METHODS for m in methods) and (getattr(model, "name", "") if model is not None
                                                      else model_name) != "lite":
        report.notes.append("the published recipe is LiteMedSAM's; skipped for another model")
        methods = [m for m in methods if m not in RECIPE_METHODS]
    n_workers = 1
    if needs_model and model is None and cache is None:
        n_workers = evaluation_workers(workers, len(cases), device)
    config = dict(
        methods=methods, spacings=spacings, margin=margin, jitter=jitter, seed=seed, recipe=recipe,
        batch_size=batch_size, montage_method=montage_method, montage_spacing=montage_spacing, overrides=overrides,
        model_name=model_name, checkpoint=checkpoint, device=device, precision=precision, backend=backend,
        cache_bytes=evaluation_cache_bytes() // n_workers,
    )
    if n_workers > 1:
        cores = max(1, len(_allowed_cores()) // n_workers)
        report.notes.append(f"{n_workers} worker processes of {cores} core(s) each, one case at a time each: "
                            "every seconds column is one worker's")
        log(f"{n_workers} worker processes of {cores} core(s) each")
        outcomes = _cases_in_workers(cases, n_workers, config)
    else:
        if needs_model and model is None:
            model = _load_model(config)
            log(_model_line(model_name, model))
        outcomes = _cases_in_process(cases, config, model, cache if needs_model else None)
    by_case: Dict[int, List[Row]] = {}
    device_text = model.device_description if model is not None else None
    for done, (index, rows, worst, elapsed, description) in enumerate(outcomes):
        if description and device_text is None:  # a worker's model, reported once
            device_text, line = description
            log(line)
        by_case[index] = rows
        report.worst = sorted(report.worst + worst, key=lambda w: w.dsc)[: max(n_worst, 0)]
        summary = " ".join(f"{r.method}={r.dsc:.3f}" for r in rows if r.spacing == montage_spacing)
        log(f"[{done + 1}/{len(cases)}] {cases[index].name}: {elapsed:.1f} s  (N={montage_spacing}) {summary}")
    report.rows = [row for index in sorted(by_case) for row in by_case[index]]
    report.seconds = time.perf_counter() - started
    write_outputs(report, methods, spacings, montage_spacing, command=command, device=device_text)
    log(f"wrote {os.path.join(out_dir, 'results.md')} ({report.seconds:.0f} s)")
    return report


#: Free memory a worker process needs: its model and runtimes (about 1.2 GB) and a BraTS case's embeddings.
WORKER_BYTES = 4 << 30


def evaluation_workers(workers: object, n_cases: int, device: str = "auto") -> int:
    """Processes that evaluate cases side by side: ``workers`` as given, or for ``auto`` one per core on a CPU
    (bounded by free memory, :data:`WORKER_BYTES` each, and the number of cases); 1 on a GPU.

    Measured on 2 cores (two cases, the full method set): two one-core processes did the work of one two-core
    process in 0.77 of its time (207 s for twice the work against 134 s); the whole development set took 31.3 min
    where one process had taken 34.3 min the day before (the machine's speed varies by 20-40% within a day). One
    core per process leaves no thread idle in the decoder's small operations and the Python between model
    calls, and a process has no lock to share.
    """
    from .acceleration import available_memory_bytes

    if workers != "auto":
        try:
            count = int(workers)
        except (TypeError, ValueError):
            raise ValueError(f"workers must be a whole number of processes or 'auto', not {workers!r}") from None
        if count < 1:
            raise ValueError(f"workers must be at least 1, not {count}")
        return max(1, min(count, n_cases, len(_allowed_cores()) or 1))
    if not hasattr(os, "sched_setaffinity") or str(device) not in ("auto", "cpu"):
        return 1
    if str(device) == "auto":
        from .models import choose_device

        if choose_device("auto").name != "cpu":
            return 1
    by_memory = available_memory_bytes("cpu") // WORKER_BYTES
    return int(max(1, min(len(_allowed_cores()), by_memory, n_cases)))


def _allowed_cores() -> List[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def _load_model(config):
    from .models import load_model

    return load_model(config["model_name"], checkpoint=config["checkpoint"], device=config["device"],
                      precision=config["precision"], backend=config["backend"])


def _model_line(model_name: str, model) -> str:
    return f"model {model_name} on {model.device_description}" + (
        f"; using {model.acceleration}" if getattr(model, "acceleration", "") else "")


def _timed_cases(group, model, cache, recipe_runner, config, own_cache: bool):
    """``[(rows, worst, seconds)]`` of cases that share one image, one after another on one cache, so that the
    image's slices are encoded once for all of them; an own cache is emptied after the group (no other image
    needs its embeddings)."""
    outcomes = []
    encode_per_slice = None
    for case in group:
        started = time.perf_counter()
        rows, worst, encode_per_slice = _evaluate_case(case, model, cache, recipe_runner, config, encode_per_slice)
        outcomes.append((rows, worst, time.perf_counter() - started))
    if own_cache:
        cache.clear_memory()
    return outcomes


def image_groups(cases: Sequence[Case]) -> List[List[int]]:
    """Indices of ``cases`` grouped by image file (several targets drawn on one scan), in order of first
    appearance; each group is evaluated on one cache."""
    groups: Dict[str, List[int]] = {}
    for index, case in enumerate(cases):
        groups.setdefault(os.path.realpath(case.image), []).append(index)
    return list(groups.values())


def _cases_in_process(cases, config, model, cache):
    """Evaluate ``cases`` one after another in this process: yields ``(index, rows, worst, seconds, None)``."""
    from .engine import EmbeddingCache

    own_cache = cache is None and model is not None
    if own_cache:
        cache = EmbeddingCache(max_memory_bytes=config["cache_bytes"])
    recipe_runner = _recipe_runner(model, config["methods"])
    for group in image_groups(cases):
        outcomes = _timed_cases([cases[i] for i in group], model, cache, recipe_runner, config, own_cache)
        for index, outcome in zip(group, outcomes):
            yield (index, *outcome, None)


def _recipe_runner(model, methods):
    """The published recipe on ``model``'s network, warmed up once (its input is always 256x256, so one call
    serves every case's timed encoder call); None when no recipe method runs."""
    if model is None or not any(m in RECIPE_METHODS for m in methods):
        return None
    runner = baselines.PublishedRecipe(net=model.net, device=model.device)
    runner.encode(np.zeros((runner.image_size,) * 2, dtype=np.uint8))
    return runner


def _cases_in_workers(cases, n_workers, config):
    """Evaluate ``cases`` in ``n_workers`` processes (spawned, each pinned to its own cores, each with its own
    model and cache), a task per image (:func:`image_groups`), the most work first (file size times targets)
    so that no worker is left with a long task at the end.
    Yields ``(index, rows, worst, seconds, (device, model line))`` as cases finish."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    counter = context.Value("i", 0)
    groups = sorted(image_groups(cases), key=lambda g: -_file_size(cases[g[0]].image) * len(g))
    with ProcessPoolExecutor(n_workers, mp_context=context, initializer=_start_worker,
                             initargs=(counter, n_workers, config)) as pool:
        futures = {pool.submit(_evaluate_in_worker, [cases[i] for i in group]): group for group in groups}
        try:
            for future in as_completed(futures):
                outcomes, description = future.result()
                for index, (rows, worst, seconds) in zip(futures[future], outcomes):
                    yield index, rows, worst, seconds, description
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


_WORKER: Dict[str, object] = {}


def _start_worker(counter, n_workers: int, config: Dict[str, object]) -> None:
    """A worker's start: take the next share of the cores (its OpenVINO and torch threads follow them), load
    the model, make its cache and recipe."""
    from .engine import EmbeddingCache

    with counter.get_lock():
        index = counter.value
        counter.value += 1
    cores = _allowed_cores()
    share = max(1, len(cores) // n_workers)
    mine = cores[index * share : (index + 1) * share] or cores
    if hasattr(os, "sched_setaffinity"):  # Linux; elsewhere the workers share the cores unpinned
        os.sched_setaffinity(0, mine)
    model = _load_model(config)
    _WORKER.update(config=config, model=model, cache=EmbeddingCache(max_memory_bytes=config["cache_bytes"]),
                   recipe_runner=_recipe_runner(model, config["methods"]))


def _evaluate_in_worker(group):
    model, config = _WORKER["model"], _WORKER["config"]
    outcomes = _timed_cases(group, model, _WORKER["cache"], _WORKER["recipe_runner"], config, True)
    return outcomes, (model.device_description, _model_line(config["model_name"], model))


def evaluation_cache_bytes() -> int:
    """Memory for one image's embeddings: half the free memory, at least 1 GiB, at most 6 GiB.

    A case shares its embeddings between all methods and spacings (and with the other cases on its image): the
    whole slices, the published-intensity slices of the recipe (MR) and the zoom crops of five runs, up to 600
    slice views (2.4 GiB) on a BraTS case.
    Evicting any of them costs an encoder call later (about half a second on 2 cores)."""
    from .acceleration import available_memory_bytes

    return int(min(max(available_memory_bytes("cpu") // 2, 1 << 30), 6 << 30))


def _evaluate_case(case, model, cache, recipe_runner, config, encode_per_slice=None):
    """One case: every method at every spacing of ``config``; returns ``(rows, worst slices, encoder seconds
    per slice)``. ``encode_per_slice`` is the encoder time measured on an earlier case of the same image, used
    when this case's slices are all in ``cache`` already."""
    from . import io, pipeline

    methods, spacings, overrides = config["methods"], config["spacings"], config["overrides"]
    margin, jitter, seed, batch_size = config["margin"], config["jitter"], config["seed"], config["batch_size"]
    recipe_mode = config["recipe"]
    montage_method, montage_spacing = config["montage_method"], config["montage_spacing"]

    volume = io.read_image(case.image)
    reference, _ = io.read_mask(case.label, case.label_values)
    if reference.shape != volume.shape:
        raise io.InputError(f"case {case.name}: label shape {reference.shape} differs from image {volume.shape}")
    spacing_mm = volume.spacing_kji()
    axis = case.slice_axis
    present = simulate.target_slices(reference, axis)
    if present.size == 0:
        raise io.InputError(f"case {case.name}: the reference mask is empty")
    first, last = int(present[0]), int(present[-1])
    rows: List[Row] = []
    worst: List[WorstSlice] = []
    modality = modality_setting(case, volume.array)

    def score(method, spacing, mask, boxes_drawn, contours_drawn, slices, encoded=0, seconds=0.0, cold=None,
              flagged=0, boxes=None):
        rows.append(Row(
            case.name, case.modality, method, spacing, metrics.dice(mask, reference),
            metrics.normalised_surface_dice(mask, reference, spacing_mm, NSD_TOLERANCE_MM),
            boxes_drawn, contours_drawn, slices, encoded, round(seconds, 4),
            round(seconds if cold is None else cold, 4), flagged,
        ))
        if method == montage_method and spacing == montage_spacing:
            worst.extend(_worst_slices(case.name, method, spacing, volume_u8, reference, mask, axis, boxes or {}))

    segmenter = None
    volume_u8 = None
    settings = pipeline.SegmentationSettings(modality=modality, **overrides)
    if model is not None and any(m in MODEL_METHODS + RECIPE_METHODS for m in methods):
        segmenter = pipeline.make_segmenter(model, volume.array, axis, settings, cache=cache, batch_size=batch_size,
                                            is_colour=volume.is_colour)
        # The recipe columns see MedSAM's published intensity rule, whatever our defaults are.
        volume_u8 = pipeline.normalised_volume(volume.array, dataclasses.replace(settings, mr_rule="published"),
                                               volume.is_colour)
        t0 = time.perf_counter()
        encoded = segmenter.ensure_embeddings(range(first, last + 1))
        if encoded or encode_per_slice is None:
            encode_per_slice = (time.perf_counter() - t0) / max(encoded, 1)
    else:
        volume_u8 = pipeline_free_u8(volume.array, modality)

    every = simulate.every_slice_boxes(reference, axis, margin, jitter, seed)
    spacing_free: Dict[str, Row] = {}

    def engine_run(method, keys, strategy):
        t0 = time.perf_counter()
        result = segmenter.segment(keys, dataclasses.replace(settings, strategy=strategy))
        seconds = time.perf_counter() - t0
        n_slices = len(result.boxes)
        cold = seconds + max(n_slices - result.encoded, 0) * encode_per_slice
        return result, seconds, cold, n_slices

    recipe_embeddings: Optional[Dict[int, tuple]] = None
    recipe_encode_per_slice = 0.0
    recipe_decode_per_slice: Optional[float] = None  # set when the engine's decoder gives the recipe's masks
    if recipe_runner is not None and any(m in methods for m in RECIPE_METHODS):
        # The recipe sees the published intensities; for CT (and wherever the rules agree) its slices are the
        # engine's own pixels, so the shared cache already holds their embeddings.
        from .engine import VolumeSegmenter

        recipe_segmenter = VolumeSegmenter(model, volume_u8, axis, cache=cache, batch_size=batch_size)
        recipe_embeddings, recipe_encode_per_slice = _recipe_embeddings(
            recipe_runner, recipe_segmenter, volume_u8, axis, first, last, recipe_mode
        )
        if recipe_embeddings is not None and len(recipe_embeddings) > 1:  # the engine's embeddings serve it
            recipe_decode_per_slice = _recipe_decoder_check(recipe_runner, recipe_segmenter, recipe_embeddings,
                                                            every, present)

    def recipe_run(keys):
        t0 = time.perf_counter()
        if recipe_decode_per_slice is not None:
            result = _recipe_by_engine(recipe_segmenter, keys)
            seconds = time.perf_counter() - t0
            n_slices = len(result.boxes)
            return result, seconds, n_slices * (recipe_encode_per_slice + recipe_decode_per_slice), n_slices
        result = recipe_runner.segment_volume(volume_u8, keys, embeddings=recipe_embeddings)
        seconds = time.perf_counter() - t0
        n_slices = len(result.boxes)
        if recipe_embeddings is None:  # "full": it encoded every slice itself
            return result, seconds, seconds, n_slices
        cold = result.decode_seconds + n_slices * recipe_encode_per_slice
        return result, seconds, cold, n_slices

    for spacing in spacings:
        keys = simulate.simulate_key_boxes(reference, axis, spacing, margin, jitter, seed)
        key_slices = [k.slice_index for k in keys.boxes]
        n_keys = len(key_slices)
        span = key_slices[-1] - key_slices[0] + 1  # slices the model-free methods fill
        for method in methods:
            if method in SPACING_FREE and method in spacing_free:
                row = spacing_free[method]
                rows.append(Row(**{**row.__dict__, "spacing": spacing}))
                continue
            if method in ("interpolate", "propagate"):
                result, seconds, cold, n_slices = engine_run(method, keys, method)
                score(method, spacing, result.mask, n_keys, 0, n_slices, result.encoded, seconds, cold,
                      len(result.flagged), result.boxes)
            elif method == "every_slice":
                result, seconds, cold, n_slices = engine_run(method, every, "interpolate")
                score(method, spacing, result.mask, len(every.boxes), 0, n_slices, result.encoded, seconds, cold,
                      len(result.flagged), result.boxes)
            elif method == "recipe":
                result, seconds, cold, n_slices = recipe_run(keys)
                score(method, spacing, result.mask, n_keys, 0, n_slices, 0, seconds, cold, 0, result.boxes)
            elif method == "recipe_every_slice":
                result, seconds, cold, n_slices = recipe_run(every)
                score(method, spacing, result.mask, len(every.boxes), 0, n_slices, 0, seconds, cold, 0,
                      result.boxes)
            elif method == "filled_boxes":
                t0 = time.perf_counter()
                mask = baselines.filled_boxes(reference.shape, keys)
                score(method, spacing, mask, n_keys, 0, span, seconds=time.perf_counter() - t0,
                      boxes=interpolate_boxes(keys.boxes))
            elif method == "tight_boxes":
                t0 = time.perf_counter()
                tight = simulate.tight_boxes(reference, axis)
                tight_keys = KeyBoxSet(axis, [type(k)(k.slice_index, tight[k.slice_index], "tight")
                                              for k in keys.boxes])
                mask = baselines.filled_boxes(reference.shape, tight_keys)
                score(method, spacing, mask, n_keys, 0, span, seconds=time.perf_counter() - t0,
                      boxes=interpolate_boxes(tight_keys.boxes))
            elif method == "tight_every_slice":
                t0 = time.perf_counter()
                mask = baselines.tight_boxes_filled(reference, axis)
                score(method, spacing, mask, int(present.size), 0, int(present.size),
                      seconds=time.perf_counter() - t0,
                      boxes=simulate.tight_boxes(reference, axis))
            elif method == "contours":
                t0 = time.perf_counter()
                mask = baselines.contours_interpolated(reference, axis, key_slices)
                score(method, spacing, mask, 0, n_keys, span, seconds=time.perf_counter() - t0)
            if method in SPACING_FREE:
                spacing_free[method] = rows[-1]
    return rows, worst, encode_per_slice or 0.0


def pipeline_free_u8(array: np.ndarray, modality: str) -> np.ndarray:
    """The uint8 volume for pictures when no model runs (same normalisation as the pipeline)."""
    from . import intensity

    if array.ndim == 4:
        return array.astype(np.uint8)
    return intensity.normalise_volume(array, modality)


def _recipe_embeddings(recipe_runner, segmenter, volume_u8, axis, first, last, mode):
    """``(embeddings dict or None, recipe encoder seconds per slice)``.

    Encodes the first target slice with the recipe (timed); in ``shared`` mode, when that embedding equals the
    engine's embedding of the same pixels (``segmenter`` holds the recipe's uint8 volume), the engine's embeddings
    serve the recipe for every slice. Otherwise the recipe keeps its own
    (``shared``: encoded once per slice and reused across spacings; ``full``: None, it encodes every run).
    """
    import torch

    slice_u8 = take_slice(volume_u8, axis, first)
    t0 = time.perf_counter()  # the runner was warmed up once at its one input shape (256x256)
    embedding, new_size, original_size = recipe_runner.encode(slice_u8)
    per_slice = time.perf_counter() - t0
    if mode == "full":
        return None, per_slice
    embeddings: Dict[int, tuple] = {first: (embedding, new_size, original_size)}
    if segmenter is not None:
        engine_embedding = segmenter.embedding(first)
        ours = embedding[0].cpu().numpy()
        difference = float(np.linalg.norm(ours - engine_embedding) / max(np.linalg.norm(ours), 1e-12))
        if difference <= SAME_EMBEDDING_TOLERANCE:
            segmenter.ensure_embeddings(range(first, last + 1))  # batched, on the engine's encoder path
            for s in range(first, last + 1):
                tensor = torch.from_numpy(np.ascontiguousarray(segmenter.embedding(s)))[None]
                embeddings[s] = (tensor.to(recipe_runner.device), new_size, original_size)
    return embeddings, per_slice


def _recipe_decoder_check(recipe_runner, segmenter, embeddings, every: KeyBoxSet, present) -> Optional[float]:
    """The recipe's decoder seconds per slice (median of its own calls) when the engine's batched decoder gives
    its masks on the first, middle and last target slices (:data:`SAME_MASK_PIXELS`); None when it does not."""
    boxes = {k.slice_index: k.box for k in every.boxes}
    samples = sorted({int(present[0]), int(present[len(present) // 2]), int(present[-1])})
    ours = segmenter.decode({s: boxes[s] for s in samples})
    times = []
    for s in samples:
        embedding, new_size, original_size = embeddings[s]
        recipe_runner.decode(embedding, boxes[s], new_size, original_size)  # warm-up at this shape
        t0 = time.perf_counter()
        mask, _ = recipe_runner.decode(embedding, boxes[s], new_size, original_size)
        times.append(time.perf_counter() - t0)
        differing = int(np.count_nonzero(mask != ours[s][0]))
        if differing > SAME_MASK_PIXELS * max(int(mask.sum()), 1):
            return None
    return float(np.median(times))


def _recipe_by_engine(segmenter, keys: KeyBoxSet) -> baselines.RecipeResult:
    """The recipe's result for ``keys`` (interpolated boxes, whole slices, published intensities) decoded in
    batches by ``segmenter``, whose embeddings and decoder were checked to give the recipe's own."""
    boxes = interpolate_boxes(keys.boxes)
    t0 = time.perf_counter()
    decoded = segmenter.decode(boxes)
    mask = np.zeros(segmenter.volume.shape[:3], dtype=bool)
    for s, (slice_mask, _) in decoded.items():
        put_slice(mask, keys.slice_axis, s, slice_mask)
    return baselines.RecipeResult(mask, {s: iou for s, (_, iou) in decoded.items()}, boxes, 0.0,
                                  time.perf_counter() - t0)


def _worst_slices(case_name, method, spacing, volume_u8, reference, mask, axis, boxes, per_case=2):
    """The ``per_case`` worst slices (by DSC) among those where reference or prediction is non-empty."""
    if volume_u8 is None:
        return []
    per_slice = metrics.per_slice_dice(mask, reference, axis)
    other = tuple(a for a in range(3) if a != axis)
    involved = np.flatnonzero(reference.any(axis=other) | mask.any(axis=other))
    order = sorted(involved.tolist(), key=lambda s: per_slice[s])[:per_case]
    out = []
    for s in order:
        ref2 = take_slice(reference, axis, s)
        pred2 = take_slice(mask, axis, s)
        img2 = take_slice(volume_u8, axis, s)
        box = boxes.get(s)
        region = _crop_region(ref2 | pred2, box, img2.shape[:2])
        out.append(WorstSlice(float(per_slice[s]), case_name, method, spacing, int(s), img2[region].copy(),
                              ref2[region].copy(), pred2[region].copy(),
                              None if box is None else _shift_box(box, region)))
    return out


def _crop_region(mask2d, box, shape, pad=20):
    rows = np.flatnonzero(mask2d.any(axis=1))
    cols = np.flatnonzero(mask2d.any(axis=0))
    r0, r1 = (rows[0], rows[-1]) if rows.size else (0, shape[0] - 1)
    c0, c1 = (cols[0], cols[-1]) if cols.size else (0, shape[1] - 1)
    if box is not None:
        c0, r0 = min(c0, int(box[0])), min(r0, int(box[1]))
        c1, r1 = max(c1, int(np.ceil(box[2]))), max(r1, int(np.ceil(box[3])))
    size = max(r1 - r0, c1 - c0) + 2 * pad
    rc, cc = (r0 + r1) // 2, (c0 + c1) // 2
    r0, c0 = max(rc - size // 2, 0), max(cc - size // 2, 0)
    return slice(r0, min(r0 + size, shape[0])), slice(c0, min(c0 + size, shape[1]))


def _shift_box(box, region):
    return (box[0] - region[1].start, box[1] - region[0].start, box[2] - region[1].start, box[3] - region[0].start)


# ---------------------------------------------------------------------------------------------------------
# Outputs


def summarise(rows: Sequence[Row], method: str, spacing: int) -> Optional[Dict[str, float]]:
    selected = [r for r in rows if r.method == method and r.spacing == spacing]
    if not selected:
        return None
    dsc = np.array([r.dsc for r in selected])
    nsd = np.array([r.nsd for r in selected])
    return {
        "n": len(selected),
        "dsc_mean": float(dsc.mean()), "dsc_median": float(np.median(dsc)),
        "nsd_mean": float(nsd.mean()), "nsd_median": float(np.median(nsd)),
        "boxes": float(np.mean([r.boxes_drawn for r in selected])),
        "contours": float(np.mean([r.contours_drawn for r in selected])),
        "slices": float(np.mean([r.slices_segmented for r in selected])),
        "seconds": float(np.sum([r.seconds for r in selected])),
        "seconds_cold": float(np.sum([r.seconds_cold for r in selected])),
    }


def write_outputs(report: EvaluationReport, methods, spacings, montage_spacing, command=None, device=None) -> None:
    out = report.out_dir
    with open(os.path.join(out, "results.csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in report.rows:
            record = row.as_dict()
            record["dsc"] = f"{row.dsc:.4f}"
            record["nsd"] = f"{row.nsd:.4f}"
            writer.writerow(record)
    plots = []
    try:
        plots.append(plot_dsc_vs_spacing(report.rows, methods, spacings, os.path.join(out, "dsc_vs_spacing.png")))
        if report.worst:
            plots.append(plot_worst_slices(report.worst, os.path.join(out, "worst_slices.png")))
    except ImportError as exc:  # matplotlib is an optional dependency (the "eval" extra)
        report.notes.append(f"plots skipped: {exc}")
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown_report(report, methods, spacings, montage_spacing, command, device, plots))
    with open(os.path.join(out, "readme_section.md"), "w", encoding="utf-8") as handle:
        handle.write(readme_section(report.rows, methods, spacings, montage_spacing, command, device, report.seconds,
                                    report.notes))


METHOD_LABELS = {
    "interpolate": "**ours: interpolate** (default)",
    "propagate": "ours: propagate",
    "every_slice": "ours, box on every slice",
    "recipe": "published recipe, interpolated boxes",
    "recipe_every_slice": "published recipe, box on every slice",
    "filled_boxes": "given boxes filled (no model)",
    "tight_boxes": "tight boxes filled (no model)",
    "tight_every_slice": "tight box on every slice filled (no model)",
    "contours": "contours + morphological interpolation (manual)",
}


def readme_section(rows, methods, spacings, spacing, command, device, seconds, notes=()) -> str:
    """The README's "Results" section: every method at every spacing (mean DSC / NSD), issue 7's goals, the plot
    and how it was made. Links are relative to the output folder (``update_readme`` rewrites them)."""
    n_cases = len({r.case for r in rows})
    commit = _git_commit()
    lines = [
        "## Results",
        "",
        f"Simulated annotator on {n_cases} development cases (`../shared/data/cases.json`): key boxes = the "
        f"reference mask's box + 3 px every N slices from the first to the last target slice. Mean DSC / mean NSD "
        f"at {NSD_TOLERANCE_MM:g} mm over the cases; medians and every case are in [results.md](results.md).",
        "",
        f"Made with `{command or 'medsam-segment evaluate'}` in {seconds / 60:.1f} min on "
        f"{machine_description(device)}" + (f", commit {commit}" if commit else "") +
        f", {datetime.datetime.now().strftime('%Y-%m-%d')}.",
        "",
    ]
    lines += [f"- {note}" for note in notes]
    if notes:
        lines.append("")
    header = "| method | " + " | ".join(f"every {n}" for n in spacings) + f" | boxes drawn (every {spacing}) | " \
        f"contours drawn (every {spacing}) | s per case (every {spacing}, cold) |"
    lines += [header, "| --- |" + " ---: |" * (len(spacings) + 3)]
    for method in methods:
        cells = []
        for n in spacings:
            summary = summarise(rows, method, n)
            cells.append("" if summary is None else f"{summary['dsc_mean']:.3f} / {summary['nsd_mean']:.3f}")
        at = summarise(rows, method, spacing)
        if at is None:
            continue
        lines.append(f"| {METHOD_LABELS.get(method, method)} | " + " | ".join(cells) +
                     f" | {at['boxes']:.1f} | {at['contours']:.1f} | {at['seconds_cold'] / max(at['n'], 1):.1f} |")
    lines.append("")
    lines.extend(goal_lines(rows, spacings, heading="###"))
    lines += ["![DSC against key-slice spacing](dsc_vs_spacing.png)", ""]
    return "\n".join(lines)


def machine_description(device: Optional[str] = None) -> str:
    import multiprocessing

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    text = f"{cpu}, {multiprocessing.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"
    try:
        import torch

        text += f", torch {torch.__version__} with {torch.get_num_threads()} threads"
    except ImportError:
        pass
    if device:
        text += f"; model on {device}"
    return text


def _git_commit() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def markdown_report(report, methods, spacings, montage_spacing, command, device, plots) -> str:
    rows = report.rows
    lines = ["# Evaluation results", ""]
    lines.append(f"- command: `{command or 'medsam-segment evaluate'}`")
    lines.append(f"- machine: {machine_description(device)}")
    commit = _git_commit()
    lines.append(f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}" + (f", commit {commit}" if commit
                                                                                     else ""))
    cases = sorted({r.case for r in rows})
    lines.append(f"- {len(cases)} cases, key-slice spacings {list(spacings)}, total {report.seconds:.0f} s")
    lines.append(f"- NSD tolerance {NSD_TOLERANCE_MM:g} mm; `boxes` = boxes the annotator drew, `contours` = contours "
                 "drawn; `seconds` with embeddings shared between methods, `cold` = including the encoder time of "
                 "the slices segmented")
    for note in report.notes:
        lines.append(f"- note: {note}")
    lines.append("")
    for spacing in spacings:
        lines.append(f"## Key boxes every {spacing} slices: all cases")
        lines.append("")
        lines.append("| method | DSC mean | DSC median | NSD mean | NSD median | boxes | contours | slices | "
                     "seconds | cold |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for method in methods:
            s = summarise(rows, method, spacing)
            if s is None:
                continue
            lines.append(
                f"| {method} | {_fmt(s['dsc_mean'])} | {_fmt(s['dsc_median'])} | {_fmt(s['nsd_mean'])} | "
                f"{_fmt(s['nsd_median'])} | {s['boxes']:.1f} | {s['contours']:.1f} | {s['slices']:.1f} | "
                f"{s['seconds']:.1f} | {s['seconds_cold']:.1f} |"
            )
        lines.append("")
    lines.extend(goal_lines(rows, spacings))
    for spacing in spacings:
        lines.append(f"## Per case, every {spacing} slices: DSC / NSD")
        lines.append("")
        lines.append("| case | " + " | ".join(methods) + " |")
        lines.append("| --- |" + " ---: |" * len(methods))
        by_key = {(r.case, r.method, r.spacing): r for r in rows}
        for case in cases:
            cells = []
            for method in methods:
                r = by_key.get((case, method, spacing))
                cells.append("" if r is None else f"{r.dsc:.3f} / {r.nsd:.3f}")
            lines.append(f"| {case} | " + " | ".join(cells) + " |")
        lines.append("")
    for path in plots:
        lines.append(f"![{os.path.basename(path)}]({os.path.basename(path)})")
        lines.append("")
    return "\n".join(lines) + "\n"


def goal_lines(rows: Sequence[Row], spacings: Sequence[int], heading: str = "##") -> List[str]:
    """Issue 7's goals checked on these rows (where the needed methods and spacings were run)."""
    lines: List[str] = []
    if 5 not in spacings:
        return lines
    ours = [m for m in ("interpolate", "propagate") if summarise(rows, m, 5)]
    if not ours:
        return lines
    lines += [f"{heading} Issue 7 goals (every 5 slices)", "", "| goal | " + " | ".join(ours) + " |",
              "| --- |" + " --- |" * len(ours)]

    def mean(method, spacing=5):
        s = summarise(rows, method, spacing)
        return None if s is None else s["dsc_mean"]

    for reference in ("recipe_every_slice", "every_slice", "tight_boxes"):
        if mean(reference) is None:
            continue
        cells = [f"{mean(m):.3f} vs {mean(reference):.3f}: {'yes' if mean(m) > mean(reference) else 'no'}"
                 for m in ours]
        lines.append(f"| mean DSC above {reference} | " + " | ".join(cells) + " |")
    if summarise(rows, "filled_boxes", 5):
        filled = {r.case: r.dsc for r in rows if r.method == "filled_boxes" and r.spacing == 5}
        cells = []
        for m in ours:
            gaps = [(r.dsc - filled[r.case], r.case) for r in rows if r.method == m and r.spacing == 5
                    and r.case in filled]
            worst_gap, worst_case = min(gaps)
            cells.append(f"worst {worst_gap:+.3f} ({worst_case}): {'yes' if worst_gap >= -0.02 else 'no'}")
        lines.append("| no case below filled_boxes by > 0.02 | " + " | ".join(cells) + " |")
    if 10 in spacings:
        cells = []
        for m in ours:
            a, b = mean(m, 5), mean(m, 10)
            if a is not None and b is not None:
                cells.append(f"{b:.3f} vs {a:.3f}: {'yes' if a - b <= 0.03 else 'no'}")
            else:
                cells.append("")
        lines.append("| every 10 within 0.03 of every 5 (mean DSC) | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def plot_dsc_vs_spacing(rows, methods, spacings, path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for metric, ax in zip(("dsc", "nsd"), axes):
        for method in methods:
            means = []
            for spacing in spacings:
                values = [getattr(r, metric) for r in rows if r.method == method and r.spacing == spacing]
                means.append(np.mean(values) if values else np.nan)
            style = "--" if method in SPACING_FREE else ("-" if method in MODEL_METHODS else ":")
            ax.plot(list(spacings), means, style, marker="o", label=method)
        ax.set_xlabel("key-slice spacing N (slices)")
        ax.set_ylabel(f"mean {metric.upper()}" + (f" @ {NSD_TOLERANCE_MM:g} mm" if metric == "nsd" else ""))
        ax.set_xticks(list(spacings))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="best")
    n_cases = len({r.case for r in rows})
    fig.suptitle(f"Mean over {n_cases} cases: DSC and NSD against key-slice spacing")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_worst_slices(worst: Sequence[WorstSlice], path: str, columns: int = 4) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = len(worst)
    rows_n = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows_n, columns, figsize=(3.2 * columns, 3.4 * rows_n), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, w in zip(axes.ravel(), worst):
        image = w.image if w.image.ndim == 2 else w.image[..., 0]
        ax.imshow(image, cmap="gray", interpolation="nearest")
        if w.reference.any():
            ax.contour(w.reference.astype(float), levels=[0.5], colors="lime", linewidths=1.0)
        if w.prediction.any():
            ax.contour(w.prediction.astype(float), levels=[0.5], colors="red", linewidths=1.0)
        if w.box is not None:
            x0, y0, x1, y1 = w.box
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, color="yellow",
                                   linewidth=0.8, linestyle="--"))
        ax.set_title(f"{w.case[:26]}\nslice {w.slice_index}: DSC {w.dsc:.2f}", fontsize=8)
    method = worst[0].method if worst else ""
    spacing = worst[0].spacing if worst else 0
    fig.suptitle(f"Worst slices, {method}, key boxes every {spacing}: reference (green), prediction (red), "
                 "box (yellow)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------------
# Command line


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    from .settings import ModelSettings, SegmentationSettings, add_arguments

    parser.add_argument("--cases", required=True, help="cases.json (format of shared/data/cases.json)")
    parser.add_argument("--spacing", type=int, nargs="+", default=list(DEFAULT_SPACINGS),
                        help="key-slice spacings N (default 3 5 10)")
    parser.add_argument("--strategy", "--method", dest="methods", nargs="+", choices=METHODS, default=list(METHODS),
                        metavar="METHOD", help=f"methods to run (default all): {', '.join(METHODS)}")
    parser.add_argument("--out", default="evaluation", help="output folder (default ./evaluation)")
    parser.add_argument("--margin", type=float, default=simulate.DEFAULT_MARGIN,
                        help="pixels the annotator adds around the mask box (default 3)")
    parser.add_argument("--jitter", type=float, default=0, help="random extra pixels per box side, 0..PX (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the jitter")
    parser.add_argument("--case", dest="case_filter", action="append",
                        help="only cases whose name matches (glob or substring); repeat for more")
    parser.add_argument("--recipe", choices=("shared", "full", "skip"), default="shared",
                        help="published recipe: shared (reuse our embeddings when numerically the same; default), "
                             "full (encode every slice every run: slow), skip")
    add_arguments(parser, ModelSettings)
    parser.add_argument("--workers", default="auto", metavar="N|auto",
                        help="processes evaluating cases side by side (auto: one per CPU core, bounded by free "
                             "memory; 1 on a GPU)")
    add_arguments(parser, SegmentationSettings, exclude=("strategy", "modality", "window", "propagate_margin"),
                  with_published=True)
    parser.add_argument("--quiet", action="store_true")


def run_evaluate(args: argparse.Namespace) -> int:
    from .settings import ModelSettings, SegmentationSettings, from_arguments

    from_arguments(ModelSettings, args)  # validated before any case loads
    log = (lambda *a, **k: None) if args.quiet else (lambda message: print(message, flush=True))
    command = "medsam-segment evaluate " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else None
    evaluate(
        args.cases, spacings=args.spacing, strategies=args.methods, out_dir=args.out, margin=args.margin,
        jitter=args.jitter, seed=args.seed, case_filter=args.case_filter, recipe=args.recipe, model_name=args.model,
        checkpoint=args.checkpoint, device=args.device, batch_size=args.batch_size, log=log, command=command,
        settings=from_arguments(SegmentationSettings, args).accuracy(), precision=args.precision,
        backend=args.backend, workers=args.workers,
    )
    return 0


def register_cli(subparsers) -> None:
    """Add ``evaluate`` to the ``medsam-segment`` command (called by :mod:`cli`)."""
    parser = subparsers.add_parser("evaluate", help="simulate an annotator on cases with reference masks; compare "
                                                    "with the baselines (results.csv, results.md, plots)")
    add_evaluate_arguments(parser)
    parser.set_defaults(handler=run_evaluate)
