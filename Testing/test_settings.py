"""The settings schema: one definition of every choice, from which the command line and the presets derive."""

import dataclasses

import pytest
from MedSAMSegmentLib import cli
from MedSAMSegmentLib.settings import (
    PUBLISHED,
    ModelSettings,
    SegmentationSettings,
    SettingsError,
    add_arguments,
    choices_of,
    from_arguments,
)

SEGMENT = ["segment", "img.nii.gz", "--boxes", "b.json", "-o", "m.nii.gz"]


def test_published_preset_is_derived_from_the_fields():
    assert PUBLISHED == {"mr_rule": "published", "zoom": "off", "guide": "off", "refine": "off", "retry": "off",
                         "slices": "every", "box_sizes": "linear"}
    assert SegmentationSettings(**PUBLISHED).is_published
    # One departure passes the defaults rule today (docs/accuracy.md; test_default_rule checks the records).
    assert SegmentationSettings().accuracy() == {**PUBLISHED, "box_sizes": "rounded"}
    for name, value in (("zoom", "size"), ("guide", "auto"), ("mr_rule", "auto"), ("slices", "alternate"),
                        ("box_sizes", "rounded")):
        assert not SegmentationSettings(**{name: value}).is_published


@pytest.mark.parametrize("cls", [SegmentationSettings, ModelSettings])
def test_every_field_is_a_command_line_option_with_its_default_and_choices(cls):
    parser = cli.build_parser()
    segment_parser = parser._subparsers._group_actions[0].choices["segment"]
    actions = {a.dest: a for a in segment_parser._actions}
    for f in dataclasses.fields(cls):
        action = actions[f.name]
        assert action.default == f.default, f.name
        assert (tuple(action.choices) if action.choices else None) == f.metadata["choices"], f.name
    assert from_arguments(cls, parser.parse_args(SEGMENT)) == cls()


def test_explicit_options_reach_the_settings():
    args = cli.build_parser().parse_args(SEGMENT + ["--zoom", "off", "--window", "50", "350", "--precision", "bf16",
                                                    "--batch-size", "3", "--propagate-margin", "5"])
    settings = from_arguments(SegmentationSettings, args)
    assert settings.zoom == "off" and settings.window == (50.0, 350.0) and settings.propagate_margin == 5.0
    assert settings.guide == SegmentationSettings().guide
    model = from_arguments(ModelSettings, args)
    assert model.precision == "bf16" and model.batch_size == 3 and model.backend == "auto"


def test_published_flag_overrides_every_accuracy_option():
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser, SegmentationSettings, with_published=True)
    settings = from_arguments(SegmentationSettings, parser.parse_args(["--zoom", "best", "--published"]))
    assert settings.accuracy() == PUBLISHED
    assert "--published" not in cli.build_parser().format_help()  # segment keeps the individual options


@pytest.mark.parametrize("changes, message", [
    ({"zoom": "wide"}, "--zoom 'wide': use one of off, auto, best, union"),
    ({"strategy": "grow"}, "--strategy 'grow': use one of interpolate, propagate"),
    ({"window": (40, 0)}, "--window 40 0: give a level and a positive width"),
    ({"window": (40,)}, "--window 40: give a level and a positive width"),
    ({"window": (40, float("nan"))}, "give a level and a positive width"),
    ({"propagate_margin": -1}, "--propagate-margin -1: give 0 or more pixels"),
])
def test_segmentation_settings_refuse_values_outside_their_choices(changes, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SegmentationSettings(**changes)


@pytest.mark.parametrize("changes, message", [
    ({"model": "vit_h"}, "--model 'vit_h': use one of lite, vit_b"),
    ({"model": "vit_b"}, "--model vit_b needs --checkpoint"),
    ({"batch_size": 0}, "--batch-size 0: give a whole number"),
    ({"batch_size": 1.5}, "--batch-size 1.5: give a whole number"),
    ({"precision": "int8"}, "--precision 'int8': use one of auto, fp32, bf16, fp16"),
])
def test_model_settings_refuse_values_outside_their_choices(changes, message):
    with pytest.raises(SettingsError, match=message):
        ModelSettings(**changes)


def test_settings_are_frozen_and_windows_normalised():
    settings = SegmentationSettings(window=[40, 400])
    assert settings.window == (40.0, 400.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.zoom = "off"  # type: ignore[misc]


def test_choices_for_menus_come_from_the_schema():
    assert choices_of(SegmentationSettings, "guide") == ("off", "mean", "union", "mask", "auto")
    assert choices_of(ModelSettings, "backend") == ("auto", "torch", "openvino")
    with pytest.raises(KeyError):
        choices_of(SegmentationSettings, "window")


def test_bad_option_values_exit_2_with_one_line(capsys, tmp_path):
    code = cli.main(["segment", "img.nii.gz", "--boxes", "b.json", "-o", str(tmp_path / "m.nii.gz"),
                     "--window", "40", "-5"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["medsam-segment: error: --window 40 -5: give a level and a positive width, e.g. 40 400"]
