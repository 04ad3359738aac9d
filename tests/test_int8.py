"""Int8 streaming (vidseg.models.quantized, vidseg.quantize) and int8 ONNX export."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from vidseg.checkpoint import save_checkpoint
from vidseg.cli import main
from vidseg.data.cityscapes import CityscapesSequences
from vidseg.data.files import read_image
from vidseg.data.transforms import MEAN, STD, ClipTransform
from vidseg.errors import VidsegError
from vidseg.models import build_model
from vidseg.models.quantized import QConv, QTensor, Quantize, QuantizedUNet, int8_available
from vidseg.quantize import calibration_clips
from vidseg.segment import Segmenter

pytestmark = pytest.mark.skipif(not int8_available(), reason="this PyTorch build lacks oneDNN int8 convolutions")

MODEL = "resnet-cgru-small-shallow"


def val_frames(root, count: int = 6) -> list[np.ndarray]:
    files = sorted((root / "leftImg8bit_sequence" / "val").glob("*/*.png"))[:count]
    return [read_image(path) for path in files]


@pytest.fixture(scope="module")
def trained(synthcity_root, tmp_path_factory):
    """resnet-cgru-small-shallow trained for a few seconds on the tiny SynthCity set: confident, non-random
    predictions, which is what int8 must preserve. The checkpoint names its data like `vidseg train` does."""
    torch.manual_seed(0)
    dataset = CityscapesSequences(
        synthcity_root, "train", num_frames=2, gt_position="last", transform=ClipTransform((32, 64))
    )
    model = build_model(MODEL, num_classes=19)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        batch = [dataset.sample(int(torch.randint(len(dataset), (1,), generator=generator)), generator)
                 for _ in range(2)]
        frames = torch.stack([b["frames"] for b in batch])
        labels = torch.stack([b["labels"] for b in batch])
        logits, _ = model(frames)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(0, 1), ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    path = tmp_path_factory.mktemp("int8") / "tiny.pt"
    save_checkpoint(path, {
        "model_name": MODEL,
        "num_classes": 19,
        "label_set": "cityscapes",
        "model": model.state_dict(),
        "normalization": {"mean": list(MEAN), "std": list(STD)},
        "config": {"data": {"root": str(synthcity_root), "val_split": "val"}},
    })
    return path, model


def stream(segmenter: Segmenter, frames: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    segmenter.reset()
    return list(segmenter.stream(frames, probabilities=True))


def test_int8_agrees_with_fp32_on_a_trained_model_and_keeps_a_float32_state(trained, synthcity_root):
    path, _ = trained
    frames = val_frames(synthcity_root)
    fp32 = Segmenter(path)
    int8 = Segmenter(path, precision="int8", calibration=synthcity_root)
    assert isinstance(int8.network, QuantizedUNet) and int8.network.frozen
    convs = [m for m in int8.network.modules() if isinstance(m, QConv)]
    # Every convolution but the first (which reads the float32 frame) holds int8 weights only.
    assert convs[0].float_input and not hasattr(convs[0], "qweight")
    assert all(m.qweight.dtype == torch.int8 and not hasattr(m, "weight") for m in convs[1:])
    expected, got = stream(fp32, frames), stream(int8, frames)
    agreement = np.mean([np.mean(e[0] == g[0]) for e, g in zip(expected, got)])
    # int8 is another computation (probabilities differ), yet it picks the same class almost everywhere.
    assert max(np.abs(e[1] - g[1]).max() for e, g in zip(expected, got)) > 1e-4
    print(f"agreement {agreement:.4f}")
    assert agreement >= 0.98, agreement
    assert all(s.dtype == torch.float32 for s in int8._state)


def test_int8_stays_close_over_a_long_stream(trained, synthcity_root):
    """The state is float32, so quantization errors do not pile up: agreement late in a stream is as high as
    early on (the clip is looped to make it long)."""
    path, _ = trained
    frames = val_frames(synthcity_root) * 10
    fp32 = Segmenter(path)
    int8 = Segmenter(path, precision="int8", calibration=synthcity_root)
    agree = [np.mean(e == g) for e, g in zip(fp32.stream(frames), int8.stream(frames))]
    print(f"agreement first {np.mean(agree[:6]):.4f} last {np.mean(agree[-6:]):.4f}")
    assert np.mean(agree[-6:]) >= np.mean(agree[:6]) - 0.01


def test_calibration_from_each_kind_of_source(trained, synthcity_root, tmp_path):
    path, _ = trained
    frames = val_frames(synthcity_root, count=4)

    listed = calibration_clips(frames)
    assert len(listed) == 1 and all(np.array_equal(a, b) for a, b in zip(listed[0], frames))
    stacked = calibration_clips(np.stack(frames))
    assert all(np.array_equal(a, b) for a, b in zip(stacked[0], frames))

    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"f{index}.png")
    from_folder = calibration_clips(folder)
    assert all(np.array_equal(a, b) for a, b in zip(from_folder[0], frames))

    from vidseg.data.video import VideoWriter

    video = tmp_path / "clip.mp4"
    with VideoWriter(video, 10) as writer:
        for frame in frames:
            writer.write(frame)
    from_video = calibration_clips(video)
    assert len(from_video[0]) == len(frames) and from_video[0][0].shape == frames[0].shape

    # A dataset root: clips from the sequences' first frames, the val split first (here one sequence).
    from_root = calibration_clips(synthcity_root, max_frames=3)
    first = sorted((synthcity_root / "leftImg8bit_sequence" / "val").glob("*/*.png"))[0]
    assert [len(c) for c in from_root] == [3] and np.array_equal(from_root[0][0], read_image(first))
    train_root = tmp_path / "train-only"
    for folder in ("leftImg8bit_sequence", "gtFine"):
        (train_root / folder).mkdir(parents=True)
        (train_root / folder / "train").symlink_to(synthcity_root / folder / "train")
    (train_root / "synthcity.json").symlink_to(synthcity_root / "synthcity.json")
    spread = calibration_clips(train_root, max_frames=6, clip_frames=2)
    assert [len(c) for c in spread] == [2, 2, 2]  # 3 train sequences, 2 frames from each

    # Nothing given: the checkpoint's own validation frames.
    from vidseg.checkpoint import load_checkpoint

    own = calibration_clips(None, load_checkpoint(path), max_frames=3)
    assert all(np.array_equal(a, b) for a, b in zip(own[0], from_root[0]))

    # The calibration data is what sets the grids: black frames give another input grid than real ones.
    real = Segmenter(path, precision="int8", calibration=frames)
    black = Segmenter(path, precision="int8", calibration=[np.zeros_like(frames[0])] * 2)
    assert real.network.encoder[0][0].output.scale != black.network.encoder[0][0].output.scale
    Segmenter(path, precision="int8", calibration=video)  # a video path works end to end
    Segmenter(path, precision="int8")  # so do the checkpoint's own validation frames


def test_clear_errors(trained, synthcity_root, tmp_path, monkeypatch):
    path, model = trained
    frames = val_frames(synthcity_root, count=3)
    bare = {"model_name": MODEL, "num_classes": 19, "label_set": "cityscapes", "model": model.state_dict()}
    with pytest.raises(VidsegError, match="no calibration data.*--calibrate"):
        Segmenter(bare, precision="int8")
    moved = {**bare, "config": {"data": {"root": str(tmp_path / "gone"), "val_split": "val"}}}
    with pytest.raises(VidsegError, match="gone .*not on this machine"):
        Segmenter(moved, precision="int8")
    with pytest.raises(VidsegError, match="frame 1 .* is 32x16 .* started at 64x32"):
        Segmenter(path, precision="int8", calibration=[frames[0], frames[1][:16, :32]])
    with pytest.raises(VidsegError, match=r"frame 0 .*shape \(32, 64\).*\[H, W, 3\] uint8"):
        calibration_clips([frames[0][..., 0]])
    with pytest.raises(VidsegError, match="float32"):
        calibration_clips([frames[0].astype(np.float32)])
    with pytest.raises(VidsegError, match="does not exist"):
        calibration_clips(tmp_path / "missing.mp4")
    with pytest.raises(VidsegError, match="holds no frames"):
        calibration_clips([])
    with pytest.raises(VidsegError, match="int8 .* cpu"):
        Segmenter(path, precision="int8", calibration=frames, optimize=False)
    with pytest.raises(VidsegError, match="disagree"):
        Segmenter(path, amp="bf16", precision="int8")
    with pytest.raises(VidsegError, match="convnext"):
        Segmenter({**bare, "model_name": "convnext-cgru-small-deep",
                   "model": build_model("convnext-cgru-small-deep", 19).state_dict()},
                  precision="int8", calibration=frames)

    import vidseg.models.quantized as quantized

    monkeypatch.setattr(quantized, "int8_available", lambda: False)
    with pytest.raises(VidsegError, match="lacks oneDNN's int8"):
        Segmenter(path, precision="int8", calibration=frames)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    from vidseg.export import export_int8_onnx

    with pytest.raises(VidsegError, match=r"pip install 'vidseg\[onnx\]'"):
        export_int8_onnx(model, tmp_path / "m.onnx", calibration=frames)
    assert not (tmp_path / "m.onnx").exists()


def test_per_frame_and_crnn_models_quantize_too():
    torch.manual_seed(0)
    frame = torch.randn(1, 3, 40, 56)
    for name in ("vanilla-none-small-shallow", "vanilla-crnn-small-shallow"):
        model = build_model(name, num_classes=5).eval()
        network = QuantizedUNet(model)
        state = None
        for _ in range(3):
            _, state = network.step(frame, state)
        network.freeze()
        got, got_state = network.step(frame, state)
        with torch.no_grad():
            expected, expected_state = model.step(frame, state)
        assert got.shape == expected.shape and len(got_state) == len(expected_state)
        span = float(expected.max() - expected.min())
        assert float((got - expected).abs().max()) < 0.1 * span


def test_segment_command_with_int8(trained, synthcity_root, tmp_path, capsys):
    path, _ = trained
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in enumerate(val_frames(synthcity_root, count=3)):
        Image.fromarray(frame).save(folder / f"f{index}.png")
    masks = tmp_path / "masks"
    args = ["segment", str(folder), "--checkpoint", str(path), "--masks", str(masks), "--no-progress"]
    assert main([*args, "--precision", "int8", "--calibrate", str(synthcity_root)]) == 0
    assert len(list(masks.iterdir())) == 3
    assert main([*args, "--overwrite", "--calibrate", str(synthcity_root)]) == 2
    assert "--calibrate is for --precision int8" in capsys.readouterr().err


@pytest.mark.slow  # two ONNX exports
def test_int8_onnx_export_keeps_the_interface_and_agrees(trained, synthcity_root, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    from vidseg.export import export_int8_onnx, export_onnx, read_metadata, run_onnx_sequence

    path, model = trained
    fp32_path = export_onnx(model, tmp_path / "fp32.onnx")
    frames = val_frames(synthcity_root)
    int8_path = export_int8_onnx(model, tmp_path / "int8.onnx", calibration=frames)
    fp32, int8 = onnx.load(str(fp32_path)), onnx.load(str(int8_path))
    for kind in ("input", "output"):
        assert [v.name for v in getattr(int8.graph, kind)] == [v.name for v in getattr(fp32.graph, kind)]
        assert [str(v.type) for v in getattr(int8.graph, kind)] == [str(v.type) for v in getattr(fp32.graph, kind)]
    assert read_metadata(int8_path) == read_metadata(fp32_path)
    ops = {node.op_type for node in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert any(t.data_type == onnx.TensorProto.INT8 for t in int8.graph.initializer)
    # Only convolutions are quantized: the state update (lerp of the gates) stays float32 arithmetic.
    producers = {out: node.op_type for node in int8.graph.node for out in node.output}
    states = [v.name for v in int8.graph.output if v.name.startswith("new_state")]
    assert states and all(producers[name] not in ("DequantizeLinear", "QuantizeLinear") for name in states)

    clip = ((np.stack(frames) / 255.0 - np.array(MEAN)) / np.array(STD)).transpose(0, 3, 1, 2)[None].astype(np.float32)
    expected, _ = run_onnx_sequence(fp32_path, clip)
    got, _ = run_onnx_sequence(int8_path, clip)
    assert np.mean(expected.argmax(axis=2) == got.argmax(axis=2)) >= 0.97


def test_evaluate_command_with_int8(trained, synthcity_root, tmp_path, capsys, monkeypatch):
    """`vidseg evaluate --precision int8` scores the int8 streaming copy (not the float model) on the same
    frames: figures close to fp32's, its own default output name, the precision recorded."""
    import json

    path, _ = trained
    args = ["evaluate", "--checkpoint", str(path), "--data", str(synthcity_root), "--no-tc", "--size", "32x64",
            "--num-frames", "3"]
    assert main([*args, "--out", str(tmp_path / "fp32.json")]) == 0
    steps = []
    original = QuantizedUNet.step

    def counting_step(self, frame, state=None):
        steps.append(self.frozen)
        return original(self, frame, state)

    monkeypatch.setattr(QuantizedUNet, "step", counting_step)
    copy = tmp_path / "tiny.pt"
    copy.write_bytes(path.read_bytes())
    assert main(["evaluate", "--checkpoint", str(copy), *args[3:], "--precision", "int8",
                 "--calibrate", str(synthcity_root)]) == 0
    out = tmp_path / "tiny-val-standard-int8.json"
    fp32, int8 = (json.loads(p.read_text()) for p in (tmp_path / "fp32.json", out))
    assert int8["run"]["precision"] == "int8" and fp32["run"]["precision"] == "fp32"
    frozen_steps = sum(steps)
    assert frozen_steps >= int8["frames_scored"] > 0  # every scored frame went through the int8 model
    assert abs(int8["miou"] - fp32["miou"]) < 0.03, (int8["miou"], fp32["miou"])

    capsys.readouterr()
    assert main([*args, "--calibrate", str(synthcity_root), "--out", str(tmp_path / "x.json")]) == 2
    assert "--calibrate is for --precision int8" in capsys.readouterr().err
    assert main([*args, "--amp", "bf16", "--precision", "int8", "--out", str(tmp_path / "x.json")]) == 2
    assert "disagree" in capsys.readouterr().err
    assert main([*args, "--precision", "int8", "--device", "cuda", "--out", str(tmp_path / "x.json")]) == 2
    assert "pass --device cpu" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, residual, warp",
    [
        ("resnet-cgru-small-shallow", False, False),
        ("vanilla-cgru-small-shallow", True, False),
        ("vanilla-crnn-small-shallow", True, False),
        ("vanilla-crnn-small-shallow", True, True),
    ],
)
def test_calibration_mode_is_the_float_model(name, residual, warp):
    """Before freeze() the int8 copy runs float32 convolutions on its rearranged weights (the decoder's
    upsampling as a 1x1 convolution whose output is shuffled into the concatenation, doubled candidate weights for
    tanh as one sigmoid): the model's own function, to float rounding, logits and state, frame after frame."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=5, temporal_residual=residual, warp_state=warp)
    with torch.no_grad():  # away from the init (residual units start at zero, which would hide their tanh; the
        # state warp starts as the identity, which would hide the warp)
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    model.eval()
    network = QuantizedUNet(model)
    state = expected_state = None
    for _ in range(3):
        frame = torch.randn(1, 3, 40, 56)
        got, state = network.step(frame, state)
        with torch.no_grad():
            expected, expected_state = model.step(frame, expected_state)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        assert expected.abs().max() > 0.1
        for got_h, expected_h in zip(state, expected_state, strict=True):
            torch.testing.assert_close(got_h, expected_h, rtol=1e-4, atol=1e-4)


def test_a_quantization_point_writes_the_codes_of_its_grid():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 12, 20).contiguous(memory_format=torch.channels_last) * 3
    point = Quantize()
    point(x)  # calibration: records the range
    point.freeze(qmax=127)
    got = point(x)
    assert isinstance(got, QTensor) and got.data.dtype == torch.uint8
    assert got.data.is_contiguous(memory_format=torch.channels_last)
    expected = torch.clamp(torch.round(x / point.scale) + point.zero_point, 0, 127).to(torch.uint8)
    assert int(got.data.max()) == 127 and int(got.data.min()) == 0  # the range was recorded on x itself
    assert (got.data.int() - expected.int()).abs().max() <= 1  # round-half-even vs half-up on exact ties
    assert float((got.data == expected).float().mean()) > 0.999
    torch.testing.assert_close(got.dequantize(), x, atol=point.scale / 2 + 1e-6, rtol=0)
