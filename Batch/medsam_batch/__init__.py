"""Batch segmentation of a cohort from its key boxes (``medsam-segment batch``), resumable, on this machine's
cores. Installed beside the core (:mod:`MedSAMSegmentLib`), which it uses through its public names; the core
never imports it and the Slicer extension does not ship it. The README's "Batch" section describes the manifest.

    from medsam_batch import run_batch
    from MedSAMSegmentLib.settings import ModelSettings, SegmentationSettings

    report = run_batch("cohort.csv", "masks", SegmentationSettings(), ModelSettings(device="cpu"))
"""

from .batch import BatchReport, run_batch
from .executors import ExecutorChoice
from .jobs import BoxOptions, CaseOutcome
from .manifest import BatchCase, ManifestError, read_manifest

__all__ = ["BatchCase", "BatchReport", "BoxOptions", "CaseOutcome", "ExecutorChoice", "ManifestError", "read_manifest",
           "run_batch"]
