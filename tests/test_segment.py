"""Streaming inference equals the model's clip forward; `vidseg segment` writes complete, faithful outputs or
nothing, and explains bad input."""

import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import vidseg
from vidseg.checkpoint import save_checkpoint
from vidseg.cli import main
from vidseg.data.labels import LABELS, PALETTE, get_label_set
from vidseg.data.transforms import MEAN, STD, normalize
from vidseg.data.video import open_frames
from vidseg.errors import VidsegError
from vidseg.models import build_model
from vidseg.segment import Segmenter
from vidseg.viz import overlay

MODEL = "vanilla-crnn-small-shallow"
HEIGHT, WIDTH = 37, 61


def smooth_frames(num_frames: int, height: int = HEIGHT, width: int = WIDTH, seed: int = 0) -> list[np.ndarray]:
    """Moving colour gradients: varied enough for a random model to predict several classes, smooth enough
    for a video codec to keep."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    frames = []
    for t in range(num_frames):
        phase = rng.uniform(0, 2 * np.pi, 3)
        channels = [127 + 120 * np.sin(xs / (5 + 3 * c) + ys / (7 + c) + phase[c] + t) for c in range(3)]
        frames.append(np.stack(channels, axis=-1).astype(np.uint8))
    return frames


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny model with non-trivial BatchNorm statistics, saved with the keys of docs/design.md."""
    torch.manual_seed(0)
    model = build_model(MODEL, num_classes=19)
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    payload = {
        "model_name": MODEL,
        "num_classes": 19,
        "label_set": "cityscapes",
        "model": model.state_dict(),
        "normalization": {"mean": list(MEAN), "std": list(STD)},
    }
    save_checkpoint(path, payload)
    return path, model.eval()


def clip_logits(model, frames: list[np.ndarray]) -> torch.Tensor:
    """The plain model's whole-clip forward: logits [T, C, H, W]."""
    clip = normalize(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2))
    with torch.no_grad():
        logits, _ = model(clip[None])
    return logits[0]


def write_mp4(path, frames, rate):
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=rate)
    stream.height, stream.width = frames[0].shape[:2]
    stream.pix_fmt = "yuv444p"
    for frame in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def read_video(path) -> tuple[list[np.ndarray], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)], stream.average_rate


def entries(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------- Segmenter


def test_stream_equals_the_plain_model_clip_forward(checkpoint):
    path, model = checkpoint
    frames = smooth_frames(4)
    expected = clip_logits(model, frames)
    plain = list(Segmenter(path, optimize=False).stream(frames))
    for t, labels in enumerate(plain):
        assert labels.shape == (HEIGHT, WIDTH) and labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, expected[t].argmax(0).numpy())
    assert len(np.unique(np.stack(plain))) > 2

    fused = Segmenter(path)  # the fused inference copy, compared with the plain model too
    assert fused.optimized
    for t, (labels, probabilities) in enumerate(fused.stream(frames, probabilities=True)):
        reference = expected[t].softmax(0)
        assert probabilities.shape == (19, HEIGHT, WIDTH)
        assert np.abs(probabilities - reference.numpy()).max() < 1e-4
        top2 = reference.topk(2, dim=0).values
        decided = (top2[0] - top2[1] > 1e-3).numpy()
        np.testing.assert_array_equal(labels[decided], expected[t].argmax(0).numpy()[decided])


def test_stream_continues_across_calls_and_reset_starts_a_new_video(checkpoint):
    path, model = checkpoint
    frames = smooth_frames(4, seed=1)
    expected = clip_logits(model, frames).argmax(1).numpy()
    segmenter = Segmenter({"label_set": "cityscapes", **torch.load(path, weights_only=False)}, optimize=False)
    first = list(segmenter.stream(frames[:2]))
    rest = list(segmenter.stream(torch.from_numpy(f) for f in frames[2:]))  # tensors work like arrays
    np.testing.assert_array_equal(np.stack(first + rest), expected)
    assert segmenter.frames_seen == 4

    with pytest.raises(VidsegError, match="frame 4 is 40x30 .* started at 61x37.*reset"):
        segmenter.segment_frame(smooth_frames(1, 30, 40)[0])
    segmenter.reset()
    alone = segmenter.segment_frame(frames[3])
    np.testing.assert_array_equal(alone, clip_logits(model, frames[3:]).argmax(1).numpy()[0])


def test_working_size_infers_small_and_maps_logits_back_bilinearly(checkpoint):
    path, model = checkpoint
    frames = smooth_frames(3, seed=2)
    size = (24, 40)
    small = [
        F.interpolate(torch.from_numpy(f).permute(2, 0, 1)[None].float(), size=size, mode="bilinear",
                      antialias=True, align_corners=False)[0].round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
        for f in frames
    ]
    logits = clip_logits(model, small)
    upsampled = F.interpolate(logits, size=(HEIGHT, WIDTH), mode="bilinear", align_corners=False)
    got = np.stack(list(Segmenter(path, size=size, optimize=False).stream(frames)))
    assert got.shape == (3, HEIGHT, WIDTH)
    # The Segmenter resizes uint8 directly; the reference rounds through float, so allow near-ties to differ.
    assert (got == upsampled.argmax(1).numpy()).mean() > 0.98


def test_bf16_agrees_with_float32_on_most_pixels(checkpoint):
    path, _ = checkpoint
    frames = smooth_frames(3, seed=3)
    fp32 = np.stack(list(Segmenter(path).stream(frames)))
    bf16 = np.stack(list(Segmenter(path, amp="bf16").stream(frames)))
    autocast = np.stack(list(Segmenter(path, amp="bf16", optimize=False).stream(frames)))
    assert (bf16 == fp32).mean() > 0.9 and (autocast == fp32).mean() > 0.9


def test_bad_settings_and_frames_are_explained(checkpoint):
    path, _ = checkpoint
    with pytest.raises(VidsegError, match="fp16' needs a CUDA device"):
        Segmenter(path, amp="fp16")
    with pytest.raises(VidsegError, match="unknown amp mode"):
        Segmenter(path, amp="int8")
    if not torch.cuda.is_available():
        with pytest.raises(VidsegError, match="no CUDA device is available"):
            Segmenter(path, device="cuda")
    segmenter = Segmenter(path)
    with pytest.raises(VidsegError, match=r"frame 0 has shape \(37, 61\).*uint8 RGB"):
        segmenter.segment_frame(np.zeros((HEIGHT, WIDTH), np.uint8))
    with pytest.raises(VidsegError, match="dtype torch.float32"):
        segmenter.segment_frame(np.zeros((HEIGHT, WIDTH, 3), np.float32))


def test_segmenter_is_exported_lazily_from_the_package():
    assert vidseg.Segmenter is Segmenter
    code = "import sys, vidseg; assert 'torch' not in sys.modules; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"


# ----------------------------------------------------------------------------------------- the command


def test_segment_video_keeps_count_size_rate_and_writes_valid_masks(checkpoint, tmp_path):
    path, model = checkpoint
    rate = Fraction(30000, 1001)
    source = write_mp4(tmp_path / "in.mp4", smooth_frames(5), rate)
    out, masks = tmp_path / "new" / "deeper" / "out.mp4", tmp_path / "masks"
    code = main(["segment", str(source), "--checkpoint", str(path), "--out", str(out), "--masks", str(masks),
                 "--no-progress", "--alpha", "0.6"])
    assert code == 0

    decoded = list(open_frames(source))
    written, written_rate = read_video(out)
    assert len(written) == 5 and written_rate == rate and written[0].shape == (HEIGHT, WIDTH, 3)
    assert entries(masks) == [f"{i:06d}.png" for i in range(5)]
    mask_maps = [np.asarray(Image.open(masks / f"{i:06d}.png")) for i in range(5)]
    assert all(m.shape == (HEIGHT, WIDTH) and m.max() < 19 for m in mask_maps)
    # The masks are the streamed prediction of the decoded frames; the video shows them blended in.
    expected = list(Segmenter(path).stream(decoded))
    for t in range(5):
        np.testing.assert_array_equal(mask_maps[t], expected[t])
        shown = overlay(decoded[t], expected[t], "cityscapes", 0.6)
        codec_error = np.abs(written[t].astype(int) - shown).mean()
        assert codec_error < 8 and codec_error < np.abs(written[t].astype(int) - decoded[t]).mean() / 4


def test_segment_frame_folder_of_odd_size_with_working_size_side_by_side_and_mask_formats(checkpoint, tmp_path):
    path, _ = checkpoint
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = smooth_frames(4, seed=4)
    for index, frame in zip([1, 2, 10, 11], frames):
        Image.fromarray(frame).save(folder / f"frame{index}.png")
    out = tmp_path / "side.mkv"
    common = [str(folder), "--checkpoint", str(path), "--no-progress", "--size", "32x48"]
    assert main(["segment", *common, "--out", str(out), "--side-by-side", "--fps", "10"]) == 0
    written, rate = read_video(out)
    assert len(written) == 4 and rate == 10 and written[0].shape == (HEIGHT, 2 * WIDTH, 3)
    left, right = written[2][:, :WIDTH].astype(int), written[2][:, WIDTH:].astype(int)
    assert np.abs(left - frames[2]).mean() < 8 < np.abs(right - frames[2]).mean()  # input | overlay

    expected = list(Segmenter(path, size=(32, 48)).stream(frames))
    assert main(["segment", *common, "--masks", str(tmp_path / "ids"), "--mask-format", "labelids"]) == 0
    assert main(["segment", *common, "--masks", str(tmp_path / "rgb"), "--mask-format", "color"]) == 0
    train_label_ids = {label.id: label.train_id for label in LABELS if label.train_id != 255}
    for index, labels in zip([1, 2, 10, 11], expected):
        ids = np.asarray(Image.open(tmp_path / "ids" / f"frame{index}.png"))
        np.testing.assert_array_equal(np.vectorize(train_label_ids.get)(ids), labels)
        rgb = np.asarray(Image.open(tmp_path / "rgb" / f"frame{index}.png"))
        np.testing.assert_array_equal(rgb, PALETTE[labels])


def test_report_label_set_void_becomes_255_in_trainid_masks(checkpoint, tmp_path):
    torch.manual_seed(1)
    model = build_model(MODEL, num_classes=20).eval()
    frames = smooth_frames(2, seed=5)
    with torch.no_grad():  # shift the void logit so that void wins on about half of the pixels
        logits = clip_logits(model, frames)
        model.head.bias[19] += (logits[:, :19].max(1).values - logits[:, 19]).median()
    payload = {"model_name": MODEL, "num_classes": 20, "label_set": "report", "model": model.state_dict()}
    segmenter = Segmenter(payload, optimize=False)
    assert segmenter.label_set is get_label_set("report")
    predicted = np.stack(list(segmenter.stream(frames)))
    assert (predicted == 19).any() and (predicted != 19).any()
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{index}.png")
    save_checkpoint(tmp_path / "report.pt", payload)
    masks = tmp_path / "masks"
    assert main(["segment", str(folder), "--checkpoint", str(tmp_path / "report.pt"), "--masks", str(masks),
                 "--no-progress", "--no-optimize"]) == 0
    written = np.stack([np.asarray(Image.open(masks / f"{i}.png")) for i in range(2)])
    np.testing.assert_array_equal(written, np.where(predicted == 19, 255, predicted))


def test_existing_outputs_are_refused_unless_overwrite(checkpoint, tmp_path, capsys):
    path, _ = checkpoint
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in enumerate(smooth_frames(2, seed=6)):
        Image.fromarray(frame).save(folder / f"{index}.png")
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    args = ["segment", str(folder), "--checkpoint", str(path), "--out", str(out), "--no-progress"]
    assert main(args) == 2
    assert f"output {out} already exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    assert main([*args, "--overwrite"]) == 0
    assert len(read_video(out)[0]) == 2
    assert main(["segment", str(folder), "--checkpoint", str(path), "--no-progress"]) == 2
    assert "nothing to write" in capsys.readouterr().err


def test_failures_mid_stream_leave_no_output_behind(checkpoint, tmp_path, capsys):
    path, _ = checkpoint
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = smooth_frames(3, seed=7)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{index}.png")
    Image.fromarray(smooth_frames(1, HEIGHT + 2, WIDTH)[0]).save(folder / "3.png")
    results = tmp_path / "results"
    out, masks = results / "out.mp4", results / "masks"
    args = ["--checkpoint", str(path), "--out", str(out), "--masks", str(masks), "--no-progress"]
    assert main(["segment", str(folder), *args]) == 2
    err = capsys.readouterr().err
    assert f"frame {folder / '3.png'} is 61x39" in err and "first frame" in err
    assert entries(results) == []

    mkv = tmp_path / "cut.mkv"
    with av.open(str(mkv), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width, stream.pix_fmt = 38, 62, "yuv420p"
        for frame in smooth_frames(30, 38, 62):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = mkv.read_bytes()
    mkv.write_bytes(data[: len(data) // 2])
    assert main(["segment", str(mkv), *args]) == 2
    assert f"video {mkv} ended after" in capsys.readouterr().err
    assert entries(results) == []

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["segment", str(empty), *args]) == 2
    assert f"folder {empty} contains no frames" in capsys.readouterr().err


def test_segmenter_infers_at_the_checkpoints_training_scale_by_default(checkpoint, tmp_path):
    """A checkpoint that records its working size is run at that scale: a frame of twice the training size is
    shrunk to it, a frame of another aspect ratio is fitted inside it, ``size="input"`` keeps the frame's size."""
    payload = torch.load(checkpoint[0], weights_only=True)
    path = tmp_path / "scaled.pt"
    save_checkpoint(path, {**{k: v for k, v in payload.items() if k != "format"}, "working_size": [16, 24]})
    frames = smooth_frames(3, height=32, width=48)

    default = np.stack(list(Segmenter(path).stream(frames)))
    exact = np.stack(list(Segmenter(path, size=(16, 24)).stream(frames)))
    native = np.stack(list(Segmenter(path, size="input").stream(frames)))
    assert default.shape == native.shape == (3, 32, 48)
    np.testing.assert_array_equal(default, exact)
    assert (default != native).any()  # the scale really changed what the model saw

    wide = smooth_frames(2, height=32, width=96)  # twice as wide: fitted to 8 x 24, not squeezed to 16 x 24
    fitted = np.stack(list(Segmenter(path).stream(wide)))
    np.testing.assert_array_equal(fitted, np.stack(list(Segmenter(path, size=(8, 24)).stream(wide))))
    with pytest.raises(VidsegError, match="'checkpoint', 'input'"):
        Segmenter(path, size="train")


def test_a_cpu_segmenter_asks_glibc_to_keep_freed_memory(checkpoint, monkeypatch):
    path, _ = checkpoint
    calls = []
    monkeypatch.setattr("vidseg.segment.keep_freed_memory", lambda: calls.append("kept") or True)
    Segmenter(path)
    assert calls == ["kept"]
