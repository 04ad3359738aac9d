"""Output memory (``model.output_memory``, ``vidseg.models.memory``): a learned running average of the class
probabilities. The references are independent of the code under test: the per-frame network with the same weights
(its softmax), an average computed by hand with a known constant gate, and a gate trained on a task where only
memory can answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import with_random_batchnorm
from torch import nn

from vidseg.checkpoint import model_from_checkpoint
from vidseg.config import config_from_dict
from vidseg.errors import VidsegError
from vidseg.models import build_model, optimize_for_inference


def memory_twins(seed: int = 0, random_gate: bool = True):
    """A per-frame model with output memory (a random gate unless told otherwise) and the plain per-frame model
    with the same network weights."""
    torch.manual_seed(seed)
    model = with_random_batchnorm(build_model("vanilla-none-small-shallow", num_classes=5, output_memory=True), seed)
    with torch.no_grad():
        model.head.weight.mul_(30)  # confident predictions that differ between frames (a fresh head is near uniform)
        if random_gate:
            for parameter in model.output_memory.parameters():
                parameter.normal_(0, 0.5)
    model.eval()
    per_frame = build_model("vanilla-none-small-shallow", num_classes=5).eval()
    per_frame.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("output_memory.")})
    return model, per_frame


def frames_(t: int = 4, height: int = 21, width: int = 34, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, t, 3, height, width, generator=torch.Generator().manual_seed(seed))


def test_first_frame_is_the_per_frame_prediction_and_the_model_is_temporal():
    model, per_frame = memory_twins()
    frames = frames_()
    with torch.no_grad():
        logits, state = model(frames)
        alone = per_frame(frames)[0]
    assert model.is_temporal and not per_frame.is_temporal
    torch.testing.assert_close(logits[:, 0], alone[:, 0].log_softmax(dim=1), rtol=0, atol=1e-5)
    # Later frames blend in the past: not the per-frame probabilities, but still distributions.
    assert (logits[:, 1:].exp() - alone[:, 1:].softmax(dim=2)).abs().max() > 1e-2
    torch.testing.assert_close(logits.exp().sum(dim=2), torch.ones_like(logits[:, :, 0]))
    assert len(state) == 1 and state[0].shape == (2, 5, *model.padded_size(21, 34))


def test_a_constant_gate_is_a_running_average_of_the_per_frame_probabilities():
    model, per_frame = memory_twins(seed=2, random_gate=False)
    g = 0.3
    with torch.no_grad():
        model.output_memory.gate.bias.fill_(math.log(g / (1 - g)))  # the gate's weights start at zero
    frames = frames_(t=5, seed=3)
    with torch.no_grad():
        logits, _ = model(frames)
        probabilities = per_frame(frames)[0].softmax(dim=2)
    expected = [probabilities[:, 0]]
    for t in range(1, 5):
        expected.append(g * probabilities[:, t] + (1 - g) * expected[-1])
    torch.testing.assert_close(logits.exp(), torch.stack(expected, dim=1), rtol=0, atol=1e-5)


def test_zero_state_is_no_history_and_streaming_equals_the_clip_forward():
    model, _ = memory_twins(seed=4)
    frames = frames_(seed=5)
    with torch.no_grad():
        clip_logits, _ = model(frames)
        zeros = torch.zeros(2, 5, *model.padded_size(21, 34))
        first, state = model.step(frames[:, 0], (zeros,))
        torch.testing.assert_close(first, clip_logits[:, 0], rtol=0, atol=1e-6)
        for t in range(1, 4):
            logits, state = model.step(frames[:, t], state)
        torch.testing.assert_close(logits, clip_logits[:, -1])
        with pytest.raises(ValueError, match="output memory has shape .* frame size or batch size changed"):
            model.step(frames[:, 0, :, :16, :16], state)
        with pytest.raises(ValueError, match="state has 2 tensors, the model needs 1"):
            model.step(frames[:, 0], (*state, *state))


def test_the_gate_learns_to_lean_on_memory_where_the_frame_is_unreadable_and_not_elsewhere():
    """Clips of three frames: scene A, a blank frame, scene B, labelled A, A, B. On the blank frame only the memory
    can answer; on scene B the memory (of A) is wrong. Trained alone (the network frozen after learning to read a
    scene), the gate must fall on blank frames and rise on readable ones: a constant gate cannot do both."""
    torch.manual_seed(0)
    model = build_model("vanilla-none-small-shallow", num_classes=2, output_memory=True)
    labels_a, labels_b = ((torch.rand(8, 16, 16) > 0.5).long() for _ in range(2))
    scene_a, scene_b = (torch.zeros(8, 3, 16, 16) for _ in range(2))
    scene_a[:, 0], scene_b[:, 0] = labels_a * 4.0 - 2, labels_b * 4.0 - 2  # the first channel shows the classes
    frames = torch.stack([scene_a, torch.zeros_like(scene_a), scene_b], dim=1)
    network = [p for n, p in model.named_parameters() if not n.startswith("output_memory.")]
    optimizer = torch.optim.Adam(network, lr=1e-2)
    model.train()
    for _ in range(30):  # the network learns to read a scene, frame by frame
        logits = model.step(torch.cat([scene_a, scene_b]))[0]
        loss = nn.functional.cross_entropy(logits, torch.cat([labels_a, labels_b]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()

    def gates() -> tuple[float, float]:
        """The gate's median on the blank frame and on scene B, recovered from m_t = g p_t + (1 - g) m_{t-1}."""
        with torch.no_grad():
            blends = model(frames)[0].exp()
            alone = torch.stack([model.step(frames[:, t])[0].exp() for t in range(3)], dim=1)
        found = []
        for t in (1, 2):
            delta = alone[:, t] - blends[:, t - 1]
            found.append(((blends[:, t] - blends[:, t - 1]) / delta)[delta.abs() > 0.05].median().item())
        return found[0], found[1]

    blank_before, readable_before = gates()
    gate = torch.optim.Adam(model.output_memory.parameters(), lr=3e-2)
    for _ in range(60):
        logits = model(frames)[0]
        loss = nn.functional.cross_entropy(logits[:, 1], labels_a) + nn.functional.cross_entropy(logits[:, 2], labels_b)
        gate.zero_grad()
        loss.backward()
        gate.step()
    blank, readable = gates()
    assert blank_before == pytest.approx(0.9, abs=1e-3) and readable_before == pytest.approx(0.9, abs=1e-3)
    assert blank < 0.3 and readable > 0.97


def test_output_memory_survives_fusion_int8_checkpoints_and_configs():
    from vidseg.models.quantized import QuantizedUNet, int8_available

    model, _ = memory_twins(seed=6)
    frames = frames_(t=3, seed=7)
    with torch.no_grad():
        expected, _ = model(frames)
        fused, _ = optimize_for_inference(model, dtype=torch.float32)(frames)
        bf16, _ = optimize_for_inference(model, dtype=torch.bfloat16)(frames)
    assert (fused - expected).abs().max() < 1e-4
    assert (bf16.float().argmax(dim=2) == expected.argmax(dim=2)).float().mean() > 0.95
    checkpoint = {"model_name": "vanilla-none-small-shallow", "num_classes": 5, "model": model.state_dict(),
                  "config": {"model": {"output_memory": True}}}  # fmt: skip
    with torch.no_grad():
        rebuilt = model_from_checkpoint(checkpoint).eval()
        assert rebuilt.output_memory is not None and torch.equal(rebuilt(frames)[0], expected)
    if int8_available():
        network = QuantizedUNet(model)  # calibration mode computes the float model
        state = None
        with torch.no_grad():
            for t in range(3):
                got, state = network.step(frames[:, t], state)
        torch.testing.assert_close(got, expected[:, -1], rtol=1e-4, atol=1e-4)
    budget = {"train": {"steps": 1}}
    config = config_from_dict({"model": {"name": "vanilla-none-small-deep", "output_memory": True}, **budget})
    assert config.model.output_memory
    with pytest.raises(VidsegError, match="model.output_memory"):
        config_from_dict({"model": {"output_memory": "yes"}, **budget})


def test_output_memory_on_a_recurrent_model_keeps_the_units_states_first():
    torch.manual_seed(8)
    model = build_model("vanilla-crnn-small-shallow", num_classes=5, temporal_residual=True, output_memory=True)
    plain = build_model("vanilla-crnn-small-shallow", num_classes=5, temporal_residual=True)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("output_memory.")})
    model.eval()
    plain.eval()
    frames = frames_(t=3, seed=9)
    with torch.no_grad():
        _, state = model(frames)
        _, plain_state = plain(frames)
    assert len(state) == len(plain_state) + 1
    for got, want in zip(state, plain_state):
        torch.testing.assert_close(got, want)


def test_onnx_export_streams_output_memory_like_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    from vidseg.export import export_onnx, read_metadata, run_onnx_sequence

    model, per_frame = memory_twins(seed=10)
    path = export_onnx(model, tmp_path / "memory.onnx")
    metadata = read_metadata(path)
    assert metadata["vidseg.state_channels"] == "[5]" and metadata["vidseg.state_levels"] == "[0]"
    frames = frames_(t=3, height=13, width=22, seed=11)
    with torch.no_grad():
        expected, _ = model(frames)
        alone = per_frame(frames)[0]
    logits, _ = run_onnx_sequence(path, frames.numpy())
    # The exported step reads a zero memory on the first frame: the per-frame prediction.
    assert np.abs(logits[:, 0] - alone[:, 0].log_softmax(dim=1).numpy()).max() < 1e-4
    assert np.abs(logits - expected.numpy()).max() < 1e-4 * max(1.0, float(expected.abs().max()))


def test_memory_gradient_false_trains_the_network_exactly_as_its_per_frame_twin(dense_tree, tmp_path):
    """Two training steps from one per-frame checkpoint, same seed and data: with loss.memory_gradient false the
    network's weights end where the per-frame model's do (the gate learns on its own); with the default they do not."""
    from helpers import quiet

    from vidseg.checkpoint import load_checkpoint
    from vidseg.train import train

    def run_config(steps: int, **extra):
        raw = {
            "model": {"name": "vanilla-none-small-shallow"},
            "data": {"root": str(dense_tree.root), "size": [16, 32], "num_frames": 3, "batch_size": 2,
                     "corrupt": {"rate": 0.5}},
            "loss": {"frames": "labelled"},
            "optim": {"lr": 1e-2},
            "train": {"steps": steps, "tensorboard": False},
            "eval": {"every_epochs": 0},
        }  # fmt: skip
        for section, values in extra.items():
            raw[section].update(values)
        return config_from_dict(raw, source="memory gradient test")

    train(run_config(1), tmp_path / "pre", log=quiet)
    start = {"init_from": str(tmp_path / "pre" / "last.pt")}
    train(run_config(2, train={"steps": 2, **start}), tmp_path / "per-frame", log=quiet)
    memory = {"output_memory": True}
    train(run_config(2, model=memory, loss={"memory_gradient": False}, train=start), tmp_path / "apart", log=quiet)
    train(run_config(2, model=memory, train=start), tmp_path / "joint", log=quiet)
    per_frame, apart, joint, pre = (
        load_checkpoint(tmp_path / name / "last.pt")["model"] for name in ("per-frame", "apart", "joint", "pre")
    )
    network = [name for name in per_frame if name.endswith((".weight", ".bias"))]
    assert network and not any(name.startswith("output_memory.") for name in network)
    assert all(not torch.equal(per_frame[name], pre[name]) for name in network)
    for name in network:
        torch.testing.assert_close(apart[name], per_frame[name], rtol=0, atol=1e-6)
    assert max((joint[name] - per_frame[name]).abs().max().item() for name in network) > 1e-4
    gate = [name for name in apart if name.startswith("output_memory.")]
    assert gate and any(not torch.equal(apart[name], joint[name]) for name in gate)
    with pytest.raises(VidsegError, match="loss.memory_gradient: false needs model.output_memory: true"):
        run_config(1, loss={"memory_gradient": False})


def test_the_gate_reads_each_4x4_block_of_the_frame():
    """The frame statistics equal a numpy mean and standard deviation per 4 x 4 block, and the gate uses them and
    only them: with the same network outputs, a frame of other texture blends differently, and the same frame with
    the pixels of each block mirrored (the same statistics) blends the same."""
    from vidseg.models.memory import OutputMemory, frame_statistics

    frame = torch.randn(1, 3, 8, 12, generator=torch.Generator().manual_seed(12))
    blocks = frame[0].numpy().reshape(3, 2, 4, 3, 4).transpose(0, 1, 3, 2, 4).reshape(3, 2, 3, 16)
    expected = np.concatenate([blocks.mean(axis=-1), blocks.std(axis=-1)])
    np.testing.assert_allclose(frame_statistics(frame)[0].numpy(), expected, rtol=1e-4, atol=1e-3)

    torch.manual_seed(13)
    memory_module = OutputMemory(channels=4, num_classes=3)
    with torch.no_grad():
        for parameter in memory_module.parameters():
            parameter.normal_(0, 0.5)
    feature, logits = torch.randn(1, 4, 8, 12), torch.randn(1, 3, 8, 12)
    memory = torch.softmax(torch.randn(1, 3, 8, 12), dim=1)
    with torch.no_grad():
        smooth = memory_module(feature, logits, memory, torch.zeros_like(frame))[1]
        textured = memory_module(feature, logits, memory, frame)[1]
        mirrored = frame.reshape(1, 3, 2, 4, 3, 4).flip(-1).flip(-3).reshape(1, 3, 8, 12)
        same_blocks = memory_module(feature, logits, memory, mirrored)[1]
    assert not torch.equal(mirrored, frame)
    assert (smooth - textured).abs().max() > 1e-3
    torch.testing.assert_close(same_blocks, textured, rtol=0, atol=1e-5)
