"""``medsam-segment finetune``: fine-tune LiteMedSAM's decoder head on a cohort of revised cases
(:mod:`MedSAMSegmentLib.learning.finetune` does the training), with the provenance the checkpoint carries.

A case's image is normalised as ``evaluate`` normalises it (the case's modality, the default intensity rules), and
its slices are seen in the views a run with the default settings decodes them in.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from MedSAMSegmentLib import io, pipeline
from MedSAMSegmentLib.engine import ProgressCallback
from MedSAMSegmentLib.learning.decoder_training import HeadExample
from MedSAMSegmentLib.learning.finetune import FineTuned, FinetuneSettings, case_views, examples_of
from MedSAMSegmentLib.models import SliceModel, file_sha256
from MedSAMSegmentLib.settings import SegmentationSettings

from .cases import Case, modality_setting
from .provenance import git_commit, today

#: One case's training and validation examples.
CaseExamples = Tuple[List[HeadExample], List[HeadExample]]


def case_settings(case: Case, array) -> SegmentationSettings:
    """The settings a run of ``case`` uses: the defaults, with the case's modality."""
    return SegmentationSettings(modality=modality_setting(case, array))


def cohort_examples(cases: Sequence[Case], model: SliceModel, settings: FinetuneSettings,
                    log: Callable[[str], None] = print, progress: Optional[ProgressCallback] = None
                    ) -> Dict[str, CaseExamples]:
    """Each case's examples (:func:`MedSAMSegmentLib.learning.finetune.examples_of`), one case at a time (its embeddings
    are let go before the next is read); ``progress(done, total, message)`` counts cases."""
    examples: Dict[str, CaseExamples] = {}
    for number, case in enumerate(cases, start=1):
        if progress is not None:
            progress(number - 1, len(cases), f"encoding {case.name}")
        image = io.read_image(case.image)
        reference, _ = io.read_mask(case.label, case.label_values)
        segmentation = case_settings(case, image.array)
        segmenter = pipeline.make_segmenter(model, image.array, case.slice_axis, segmentation)
        views = case_views(case.name, segmenter, reference, settings, segmentation.zoom, segmentation.box_sizes)
        examples[case.name] = examples_of(model, [views], settings)
        log(f"  {case.name}: {len(views.train)} training and {len(views.validation)} validation views")
    if progress is not None:
        progress(len(cases), len(cases), "encoded")
    return examples


def content_sha256(path: str) -> str:
    """SHA-256 of a file, or of a folder's files (a DICOM series: each file's name and digest, sorted)."""
    if not os.path.isdir(path):
        return file_sha256(path)
    digest = hashlib.sha256()
    for root, _folders, names in sorted(os.walk(path)):
        for name in sorted(names):
            digest.update(f"{os.path.relpath(os.path.join(root, name), path)}:"
                          f"{file_sha256(os.path.join(root, name))}\n".encode())
    return digest.hexdigest()


def provenance(cases: Sequence[Case], model: SliceModel, settings: FinetuneSettings, result: FineTuned,
               held_out: str, command: Optional[str]) -> Dict[str, object]:
    """What the checkpoint records: the base weights, each case and its files' SHA-256, the settings, the curve,
    the validation, and where and when it was made."""
    import dataclasses

    import torch

    return {
        "kind": "LiteMedSAM with its mask decoder's head fine-tuned by medsam-segment finetune",
        "created": today(with_time=True),
        "command": command,
        "base_weights_sha256": file_sha256(model.checkpoint_path),
        "base_provenance": model.provenance,
        "cases": [{"name": case.name, "image_sha256": content_sha256(case.image),
                   "label_sha256": content_sha256(case.label), "label_values": case.label_values,
                   "slice_axis": case.slice_axis, "modality": case.modality} for case in cases],
        "settings": dataclasses.asdict(settings),
        "zoom": SegmentationSettings().zoom,
        "training": {"examples": result.train_examples, "validation_examples": result.validation_examples,
                     "best_epoch": result.best_epoch, "seconds": round(result.seconds, 1)},
        "validation_dice": {"held_out": held_out, "base": result.base_validation_dice,
                            "fine_tuned": result.validation_dice},
        "history": [dataclasses.asdict(record) for record in result.history],
        "software": {"git_commit": git_commit(), "torch": torch.__version__, "python": sys.version.split()[0],
                     "platform": platform.platform()},
    }
