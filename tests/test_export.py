"""The ONNX step streams in onnxruntime exactly like the PyTorch model, at any size and batch."""

import json

import numpy as np
import onnx
import pytest
import torch

from vidseg.checkpoint import save_checkpoint
from vidseg.cli import main
from vidseg.data.transforms import MEAN, STD
from vidseg.export import FORMAT, export_onnx, initial_states, read_metadata, run_onnx_sequence, state_shapes
from vidseg.models import build_model

MODEL = "vanilla-crnn-small-shallow"


def random_batchnorm(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A temporal model exported with the `vidseg export` command (which also checks it in onnxruntime)."""
    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = random_batchnorm(build_model(MODEL, num_classes=19))
    checkpoint = {
        "model_name": MODEL, "num_classes": 19, "label_set": "cityscapes", "model": model.state_dict(),
        "normalization": {"mean": list(MEAN), "std": list(STD)},
    }
    save_checkpoint(folder / "tiny.pt", checkpoint)
    out = folder / "onnx" / "model.onnx"
    assert main(["export", "--checkpoint", str(folder / "tiny.pt"), "--out", str(out)]) == 0
    return out, model, folder


@pytest.mark.parametrize("batch, height, width", [(1, 37, 61), (2, 64, 32), (1, 9, 5)])
def test_onnx_streams_five_frames_like_pytorch(exported, batch, height, width):
    path, model, _ = exported
    frames = torch.randn(batch, 5, 3, height, width, generator=torch.Generator().manual_seed(height))
    with torch.no_grad():
        expected, expected_state = model(frames)
    logits, states = run_onnx_sequence(path, frames.numpy())
    assert logits.shape == (batch, 5, 19, height, width)
    assert np.abs(logits - expected.numpy()).max() < 1e-4
    assert len(states) == len(expected_state) == 3
    for got, want in zip(states, expected_state):
        assert np.abs(got - want.numpy()).max() < 1e-4


def test_state_shapes_from_the_metadata_match_the_model(exported):
    path, model, _ = exported
    metadata = read_metadata(path)
    assert metadata["vidseg.format"] == FORMAT and metadata["vidseg.model_name"] == MODEL
    assert json.loads(metadata["vidseg.mean"]) == pytest.approx(MEAN)
    assert metadata["vidseg.label_set"] == "cityscapes" and metadata["vidseg.num_classes"] == "19"
    for height, width in [(37, 61), (1, 1), (16, 16), (100, 3)]:
        with torch.no_grad():
            _, state = model.step(torch.zeros(2, 3, height, width))
        assert state_shapes(path, height, width, batch=2) == [tuple(s.shape) for s in state]
        assert all(not z.any() for z in initial_states(metadata, height, width, batch=2))


def test_onnx_inputs_and_outputs_have_named_dynamic_dimensions(exported):
    path, _, _ = exported
    graph = onnx.load(str(path)).graph
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*graph.input,
                                                                                                  *graph.output]}
    assert dims["frame"] == ["batch", 3, "height", "width"]
    assert dims["logits"] == ["batch", 19, "height", "width"]
    assert dims["state1"] == dims["new_state1"] == ["batch", 32, "state1_height", "state1_width"]
    assert [v.name for v in graph.input] == ["frame", "state0", "state1", "state2"]


def test_export_refuses_an_existing_file_unless_overwrite(exported, capsys):
    path, _, folder = exported
    before = path.read_bytes()
    assert main(["export", "--checkpoint", str(folder / "tiny.pt"), "--out", str(path)]) == 2
    assert f"output {path} already exists" in capsys.readouterr().err
    assert path.read_bytes() == before


PAIRS = [(block, temporal) for block in ("vanilla", "resnet", "convnext") for temporal in ("none", "crnn", "cgru")]


@pytest.mark.slow
@pytest.mark.parametrize(("block", "temporal"), [pair for pair in PAIRS if pair != ("vanilla", "crnn")])
def test_every_block_and_temporal_unit_streams_in_onnx_like_pytorch(tmp_path, block, temporal):
    # Each block and unit exports its own operators: ResNet's 7x7 stem and shortcuts, ConvNeXt's reflect-padded
    # depthwise 7x7, GELU and gated decoder, the cGRU's gates; an odd size exercises the padding and cropping.
    # vanilla-crnn is the `exported` fixture's model, checked above at three sizes and two batch sizes.
    name = f"{block}-{temporal}-small-shallow"
    torch.manual_seed(2)
    model = random_batchnorm(build_model(name, num_classes=5), seed=3)
    path = export_onnx(model, tmp_path / f"{name}.onnx")
    graph = onnx.load(str(path)).graph
    num_states = 0 if temporal == "none" else 3
    assert [v.name for v in graph.input] == ["frame"] + [f"state{k}" for k in range(num_states)]
    assert [v.name for v in graph.output] == ["logits"] + [f"new_state{k}" for k in range(num_states)]
    frames = torch.randn(1, 3, 3, 13, 22, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected, expected_states = model(frames)
    logits, states = run_onnx_sequence(path, frames.numpy())
    assert logits.shape == (1, 3, 5, 13, 22)
    assert np.abs(logits - expected.numpy()).max() < 1e-4 * max(1.0, float(expected.abs().max()))
    assert len(states) == len(expected_states) == num_states
    for got, want in zip(states, expected_states):
        assert np.abs(got - want.numpy()).max() < 1e-4
    if temporal == "none":
        assert state_shapes(path, 37, 61) == []
