"""The benchmark's pieces that need no timing run: the target, the moved key box, the table."""

import numpy as np
from MedSAMSegmentLib import benchmark, cli, simulate


def test_demo_target_has_40_slices_and_moved_box():
    array, reference, axis, modality, described = benchmark.load_target(None, "")
    assert array.shape[0] == benchmark.N_SLICES and reference.shape == array.shape
    assert len(simulate.target_slices(reference, axis)) == benchmark.N_SLICES
    keys = simulate.simulate_key_boxes(reference, axis, benchmark.KEY_SPACING, margin=3)
    moved = benchmark.moved_keys(keys)
    changed = [(a.slice_index, a.box, b.box) for a, b in zip(keys.sorted(), moved.sorted()) if a.box != b.box]
    assert len(changed) == 1
    _, before, after = changed[0]
    assert np.allclose(np.subtract(after, before), (4, 0, 4, 0))


def test_table_has_ratios():
    engine = {"encoder_ms": 100.0, "decoder_ms": 10.0, "end_to_end_s": 10.0, "move_box_s": 0.5, "peak_rss_mib": 900,
              "torch_threads": 2, "batch_size": 4, "target": "t", "key_boxes": 9, "slices": 40}
    recipe = dict(engine, encoder_ms=200.0, end_to_end_s=30.0, move_box_s=25.0, batch_size=1)
    table = benchmark.format_table({"engine": engine, "recipe": recipe})
    assert "| encoder, ms per slice (median) | 100 | 200 | 2.0x |" in table
    assert "50.0x" in table and "torch threads" in table and "encoder batch size" in table


def test_cli_registers_benchmark():
    args = cli.build_parser().parse_args(["benchmark", "--out", "x", "--config", "engine"])
    assert args.handler is benchmark.run_benchmark and args.config == ["engine"]
