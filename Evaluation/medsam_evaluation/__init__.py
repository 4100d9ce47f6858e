"""The MedSAM Segment study code: the evaluation, the benchmark, the baselines and the simulated annotator.

Installed with the ``eval`` extra beside the core (:mod:`MedSAMSegmentLib`), which it uses through its public
names; the core never imports this package (the Slicer extension does not ship it). ``medsam-segment evaluate``
and ``medsam-segment benchmark`` reach it through the ``medsam_segment.commands`` entry points. docs/evaluation.md
describes the modules and where the data is looked for.

    from medsam_evaluation import EvaluationConfig, evaluate

    report = evaluate(EvaluationConfig("../shared/data/cases.json", spacings=(5, 10), out_dir="results"))
"""

from .config import EvaluationConfig, accuracy_settings
from .methods import METHODS, REGISTRY
from .study import evaluate

__all__ = ["METHODS", "REGISTRY", "EvaluationConfig", "accuracy_settings", "evaluate"]
