"""Config loading: YAML into typed dataclasses, --set overrides, and errors that name the key, file and type."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vidseg.config import Config, config_from_dict, dump_config, load_config, parse_size
from vidseg.errors import VidsegError


def write(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_yaml_is_read_into_typed_sections(tmp_path):
    path = write(
        tmp_path,
        """
model: {name: resnet-cgru-small-deep}
data: {size: [64, 128], num_frames: 5, gt_position: random, frame_stride: [1, 3]}
optim: {lr: 3e-3, schedule: cosine, warmup_fraction: 0.1}
train: {minutes: 2, amp: bf16, channels_last: true}
eval: {gt_position: 11}
""",
    )
    config = load_config(path)
    assert config.model.name == "resnet-cgru-small-deep"
    assert config.data.size == [64, 128] and config.data.frame_stride == [1, 3]
    # PyYAML reads 3e-3 (no dot) as a string; a float key accepts it as the number it means.
    assert config.optim.lr == pytest.approx(3e-3) and isinstance(config.optim.lr, float)
    assert config.train.minutes == 2.0 and isinstance(config.train.minutes, float)
    assert config.eval.gt_position == 11
    # Defaults are the report's recipe.
    assert (config.optim.name, config.optim.betas, config.optim.eps, config.optim.weight_decay) == (
        "adam",
        [0.9, 0.999],
        1e-8,
        0.0,
    )


def test_unquoted_off_in_yaml_means_off(tmp_path):
    config = load_config(write(tmp_path, "train: {steps: 1, amp: off, activation_checkpointing: off}\n"))
    assert config.train.amp == "off" and config.train.activation_checkpointing == "off"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train: {steps: 1, stepz: 2}\n", ["unknown key 'train.stepz'", "train.steps"]),
        ("trian: {steps: 1}\n", ["unknown key 'trian'", "model, data, loss, optim, train, eval"]),
        ("train: {steps: ten}\n", ["'train.steps'", "an integer or null", "a string 'ten'"]),
        ("train: {steps: 1.5}\n", ["'train.steps'", "an integer", "a number 1.5"]),
        ("train: {steps: 1, amp: fp8}\n", ["'train.amp'", "one of 'off', 'bf16', 'fp16'"]),
        ("train: {steps: 1, channels_last: 1}\n", ["'train.channels_last'", "true/false", "an integer 1"]),
        ("data: {size: 512}\ntrain: {steps: 1}\n", ["'data.size'", "a list of integers"]),
        ("optim: {lr: fast}\ntrain: {steps: 1}\n", ["'optim.lr'", "a number", "a string 'fast'"]),
        ("train: [1, 2]\n", ["train must be a mapping", "a list"]),
    ],
)
def test_bad_keys_and_types_name_key_file_and_expected_type(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(VidsegError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message
    for part in expected:
        assert part in message


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"train": {}}, "no budget"),
        ({"train": {"steps": 0}}, "train.steps"),
        ({"train": {"steps": 1}, "model": {"name": "vanilla-lstm-small"}}, "model.name"),
        ({"train": {"steps": 1}, "data": {"num_frames": 3, "gt_position": 3}}, "data.gt_position"),
        ({"train": {"steps": 1}, "data": {"frame_stride": [3, 1]}}, "data.frame_stride"),
        ({"train": {"steps": 1}, "optim": {"warmup_fraction": 1.0}}, "optim.warmup_fraction"),
        ({"train": {"steps": 1, "init_temporal": "identity"}, "model": {"name": "vanilla-cgru-small-shallow"}}, "cRNN"),
        ({"train": {"steps": 1}, "data": {"size": [16, 32], "crop": [8, 64]}}, "data.crop"),
        ({"train": {"steps": 1}, "data": {"crop": [0, 64]}}, "data.crop"),
        ({"train": {"steps": 1}, "loss": {"corrupted_weight": -0.5}}, "loss.corrupted_weight"),
        ({"train": {"steps": 1}, "loss": {"corrupted_weight": float("nan")}}, "loss.corrupted_weight"),
        ({"train": {"steps": 1}, "loss": {"corrupted_encoder_gradient": 1.5}}, "loss.corrupted_encoder_gradient"),
        ({"train": {"steps": 1}, "loss": {"corrupted_encoder_gradient": -0.1}}, "loss.corrupted_encoder_gradient"),
        # Options that would silently do nothing.
        ({"train": {"steps": 1}, "data": {"num_frames": 1}, "loss": {"temporal_consistency": 1.0}}, "data.num_frames"),
        ({"train": {"steps": 1}, "data": {"mixup": {"prob": 0.9}}}, "data.mixup.prob"),
    ],
)
def test_value_checks_name_the_key(raw, key):
    with pytest.raises(VidsegError, match="my.yaml") as caught:
        config_from_dict(raw, source="my.yaml")
    assert key in str(caught.value)


def test_overrides_are_parsed_as_yaml_and_type_checked(tmp_path):
    path = write(tmp_path, "train: {steps: 10}\n")
    config = load_config(
        path, ["train.steps=3", "data.size=[16, 32]", "train.amp=bf16", "train.init_from=null", "optim.lr=1e-2"]
    )
    assert config.train.steps == 3 and config.data.size == [16, 32] and config.train.amp == "bf16"
    assert config.train.init_from is None and config.optim.lr == pytest.approx(0.01)

    for override, expected in [
        ("train.stepz=3", "unknown key 'train.stepz'"),
        ("nope.steps=3", "unknown key 'nope'"),
        ("train=3", "'train' is a section"),
        ("train.steps", "expected KEY=VALUE"),
        ("train.steps=three", "'train.steps' expects an integer or null"),
        ("data.num_frames=0", "data.num_frames"),
    ]:
        with pytest.raises(VidsegError) as caught:
            load_config(path, [override])
        assert expected in str(caught.value), override
        assert "--set" in str(caught.value)


def test_resolved_config_round_trips_through_yaml(tmp_path):
    config = config_from_dict(
        {"train": {"steps": 5, "amp": "bf16"}, "data": {"gt_position": 2}, "loss": {"class_weights": [1.0, 2.0]}}
    )
    text = dump_config(config)
    assert "amp: bf16" in text and "size: [512, 1024]" in text
    again = config_from_dict(yaml.safe_load(text))
    assert again == config
    assert isinstance(again, Config)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(VidsegError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(VidsegError, match="not valid YAML"):
        load_config(write(tmp_path, "train: {steps: [1,\n"))


def test_parse_size_reads_height_by_width_and_names_the_format_otherwise():
    assert parse_size("512x1024") == (512, 1024)
    assert parse_size(" 64X128 ") == (64, 128)
    assert parse_size("48×96") == (48, 96)
    for text in ("0x3", "12", "-1x4", "axb", "1x2x3", ""):
        with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
            parse_size(text)


CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_every_shipped_config_loads_and_names_its_model_in_the_file_name(path):
    config = load_config(path)
    assert path.stem.startswith(config.model.name), f"{path.name} trains {config.model.name}"
