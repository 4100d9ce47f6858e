"""Fixtures for tests that run the Qt files (the effect, the module page) under the Slicer stand-in
(``slicer_standin``) with the real worker process.

Use them from a test file with ``from standin_fixtures import standin_fixture, worker_logic_fixture  # noqa: F401``
(the fixtures are ``standin`` and ``worker_logic``), next to ``slicer_scene.mrml_scene_fixture``.
"""

from __future__ import annotations

import time

import pytest
from slicer_standin import install

#: The GUI must see a timer tick at least this often during a run (seconds). A run on the GUI thread stalls it for
#: the whole run (seconds), a worker thread in Slicer's process for up to 0.6 s (benchmarks/gui_thread_study.py), the
#: worker process for 15-60 ms; 0.25 s tells them apart with room for a loaded machine.
MAX_TICK_GAP_S = 0.25


@pytest.fixture(name="worker_logic", scope="module")
def worker_logic_fixture():
    """One MedSAMEffectLogic (so one worker process, model and embeddings) for the tests of this module."""
    from MedSAMSegmentLib.scene import effect

    logic = effect.MedSAMEffectLogic()
    yield logic
    logic.close_backgrounds()


@pytest.fixture(name="standin")
def standin_fixture(mrml_scene, monkeypatch, worker_logic):
    """The Slicer stand-in on a fresh scene; ``effect.shared_logic()`` is the module's worker logic."""
    from MedSAMSegmentLib.scene import effect

    monkeypatch.setattr(effect, "_SHARED", worker_logic)
    installed = install(monkeypatch, mrml_scene)
    yield installed
    installed.close()


def wait_for_reply(worker_logic, op: str, timeout_s: float) -> bool:
    """Wait, without serving the GUI loop, until the worker's reply ``op`` has arrived (unread) for the GUI."""
    incoming = worker_logic.background()._client._incoming
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(header.get("op") == op for header, _ in list(incoming.queue)):
            return True
        time.sleep(0.05)
    return False
