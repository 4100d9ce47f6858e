"""Issue 6, faults lose nothing: real ``python -m MedSAMSegmentLib.cli segment`` processes with the real LiteMedSAM
are killed (SIGTERM, SIGINT, SIGKILL) at several points; the existing output file keeps its bytes, every
``--cache-dir`` entry still verifies, and later runs (also two at once on one cache) succeed."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO, shared_data_path
from MedSAMSegmentLib.engine import EmbeddingCache

CORD_IMAGE = shared_data_path("spinal_cord", "t2s_uncropped.nii.gz")
PREVIOUS = b"the annotator's previous result - must survive\n"


def _ctrl_c_as_in_a_terminal() -> None:
    """SIGINT back to its default in the child, as a terminal's foreground job has it. A test run started in the
    background (``nohup ... &``, as CI may be) ignores SIGINT, children inherit that, and Python then leaves Ctrl-C
    ignored instead of raising KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class CliProcess:
    """A running ``medsam-segment segment`` whose stderr (progress bar included) is collected as it comes."""

    def __init__(self, tmp_path, out, cache, boxes):
        env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "MedSAMSegment"), PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "MedSAMSegmentLib.cli", "segment", CORD_IMAGE, "--boxes", boxes, "-o", str(out),
             "--cache-dir", str(cache), "--device", "cpu", "--batch-size", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(tmp_path), env=env,
            preexec_fn=_ctrl_c_as_in_a_terminal,
        )
        self.err = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while True:
            chunk = os.read(self.process.stderr.fileno(), 4096)
            if not chunk:
                return
            self.err += chunk

    def wait_for(self, text: bytes, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.err:
            assert self.process.poll() is None, f"ended before {text!r}: {self.err.decode(errors='replace')}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s"
            time.sleep(0.02)

    def wait_for_library(self, name: str, timeout: float = 120.0) -> None:
        """Wait until the process has mapped a shared library whose path holds ``name`` (an import under way)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"ended before loading {name}: {self.err.decode(errors='replace')}"
            with open(f"/proc/{self.process.pid}/maps", encoding="utf-8", errors="replace") as maps:
                if name in maps.read():
                    return
            assert time.monotonic() < deadline, f"{name} not loaded within {timeout} s"
            time.sleep(0.02)

    def finish(self, timeout: float = 600.0):
        out, rest = self.process.communicate(timeout=timeout)  # may take stderr's last bytes from the reader
        self._reader.join(timeout=10)
        self.err += rest or b""
        return self.process.returncode, out.decode(errors="replace"), self.err.decode(errors="replace")


def cord_boxes(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"slice_axis": 0, "boxes": [{"slice": 1, "box": [140, 140, 185, 180]},
                                                           {"slice": 5, "box": [140, 140, 185, 180]}]}))
    return str(path)


def cache_entries_verify(cache_dir) -> int:
    """Every entry reads back through its checksum (a corrupt one would be deleted by the read); returns the count."""
    paths = glob.glob(os.path.join(cache_dir, "*", "*.emb"))
    reader = EmbeddingCache(str(cache_dir))
    for path in paths:
        key = os.path.basename(path)[: -len(".emb")]
        value = reader._read_disk(key)
        assert value is not None and value.shape == (256, 64, 64), f"cache entry {path} does not verify"
    return len(paths)


@pytest.mark.slow
def test_killed_runs_keep_the_previous_output_and_a_valid_cache(tmp_path):
    boxes = cord_boxes(tmp_path)
    out, cache = tmp_path / "cord.nii.gz", tmp_path / "cache"
    out.write_bytes(PREVIOUS)
    outcomes = []

    # 1. SIGTERM at startup, while torch is being imported (the handler is in place: an orderly exit 130).
    # 2. SIGINT mid-run. 3. SIGKILL mid-run. 4. SIGKILL after the last slice, while the output is being written
    # (either the old bytes or a complete file).
    drills = ((signal.SIGTERM, "libtorch"), (signal.SIGINT, b"segmenting slices"),
              (signal.SIGKILL, b"segmenting slices"), (signal.SIGKILL, b"5/5"))
    for signum, wait in drills:
        run = CliProcess(tmp_path, out, cache, boxes)
        if isinstance(wait, str):
            run.wait_for_library(wait)
        else:
            run.wait_for(wait)
        run.process.send_signal(signum)
        code, stdout, err = run.finish()
        outcomes.append((signum, code))
        if signum != signal.SIGKILL:
            assert "medsam-segment: interrupted; no output was written" in err and "Traceback" not in err, err
        if out.read_bytes() != PREVIOUS:  # only possible when killed after the rename: then it is complete
            assert wait == b"5/5"
            assert sitk.GetArrayFromImage(sitk.ReadImage(str(out))).shape == (11, 320, 320)
            out.write_bytes(PREVIOUS)
        assert not glob.glob(str(tmp_path / "*.nii.gz.tmp*"))
        cache_entries_verify(cache)
    assert outcomes == [(signal.SIGTERM, 130), (signal.SIGINT, 130), (signal.SIGKILL, -signal.SIGKILL),
                        (signal.SIGKILL, -signal.SIGKILL)]

    # Leftover temporary files of killed writers are ignored by later runs; a later run succeeds and fills the cache.
    run = CliProcess(tmp_path, out, cache, boxes)
    code, stdout, err = run.finish()
    assert code == 0, err
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out))) > 0
    assert mask[1:6].any() and not mask[:1].any() and not mask[6:].any()
    assert cache_entries_verify(cache) >= 5  # 5 whole slices, plus the zoomed crops of these small boxes


@pytest.mark.slow
def test_two_concurrent_runs_share_one_cache(tmp_path):
    boxes = cord_boxes(tmp_path)
    cache = tmp_path / "shared-cache"
    runs = [CliProcess(tmp_path, tmp_path / f"run{n}.nii.gz", cache, boxes) for n in range(2)]
    results = [run.finish() for run in runs]
    for code, _, err in results:
        assert code == 0, err
    masks = [sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"run{n}.nii.gz"))) for n in range(2)]
    np.testing.assert_array_equal(masks[0], masks[1])
    assert masks[0].any()
    assert cache_entries_verify(cache) >= 5  # 5 whole slices, plus the zoomed crops of these small boxes
    assert not glob.glob(os.path.join(cache, "*", ".tmp-*"))
