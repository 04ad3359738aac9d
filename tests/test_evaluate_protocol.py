"""Evaluation scores what the benchmarks score: every labelled frame once (sequences streamed from their start),
at the label files' resolution, per-position figures over the same frames, mVC over whole sequences, corrupted
frames per type, and mIoU equal to the official Cityscapes evaluator's on the saved predictions."""

import functools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vidseg.checkpoint import save_checkpoint
from vidseg.cli import main
from vidseg.data import ClipTransform, open_dataset, read_image
from vidseg.data.corrupt import CORRUPTIONS, CorruptedClips, Corruption
from vidseg.data.labels import get_label_set
from vidseg.data.testing import band_label_ids, identity_image, make_cityscapes_tree
from vidseg.data.transforms import MEAN, STD, normalize, resize_frames, resize_labels
from vidseg.evaluate import evaluate_model, results_markdown
from vidseg.models import build_model

LABEL_SIZE = (32, 64)
WORKING = (16, 32)
FRAMES = 17
IGNORE = 255


@functools.cache
def trained_weights(name: str) -> dict:
    """A few Adam steps towards the painted bands, so that predictions follow the labels' structure (an untrained
    model predicts nearly one class everywhere, which would leave most figures uninformative)."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=19)
    frames = normalize(torch.stack([torch.from_numpy(identity_image(c, WORKING)).permute(2, 0, 1) for c in range(8)]))
    lut = get_label_set("cityscapes").lut
    labels = resize_labels(torch.from_numpy(lut[band_label_ids(0, LABEL_SIZE)].astype(np.int64))[None], WORKING)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(12):
        logits = model(frames[:, None])[0][:, 0]
        loss = F.cross_entropy(logits, labels.expand(len(frames), -1, -1), ignore_index=IGNORE)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def tiny_model(name: str):
    model = build_model(name, num_classes=19)
    model.load_state_dict(trained_weights(name))
    return model.eval()


@pytest.fixture(scope="module")
def long_tree(tmp_path_factory):
    """Dense Cityscapes layout: 2 sequences of 17 frames at 32x64, every frame labelled, all frames clean.

    Labels are band_label_ids(0) on every frame, with a block that changes class on frames 5-9, so that the
    ground truth is constant over long runs (mVC) but not everywhere.
    """
    root = tmp_path_factory.mktemp("long")
    tree = make_cityscapes_tree(
        root, cities=("aachen", "bochum"), dense_frames=FRAMES, splits=("val",), size=LABEL_SIZE, decoys=False
    )
    meta = json.loads((root / "synthcity.json").read_text())
    for entry in meta["sequences"]["val"].values():
        entry["corruption"] = [0] * FRAMES
    (root / "synthcity.json").write_text(json.dumps(meta))
    for (split, name), _ in list(tree.label_ids.items()):
        ids = with_fine_structure(band_label_ids(0, LABEL_SIZE))
        if 5 <= int(name.rsplit("_", 1)[1]) <= 9:
            ids[4:12, 8:30] = 26  # car
        rewrite_label(tree, split, name, ids)
    return tree


def with_fine_structure(ids: np.ndarray) -> np.ndarray:
    """1-pixel poles (labelId 17) in every 4th column from 0: a 2x nearest downsampling (centre-aligned, it
    keeps the odd columns) loses them all, so scoring at the working size cannot equal scoring at the labels'."""
    ids = ids.copy()
    ids[:, 0::4] = 17
    return ids


def rewrite_label(tree, split: str, name: str, ids: np.ndarray) -> None:
    city = name.split("_")[0]
    Image.fromarray(ids).save(tree.root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png")
    tree.label_ids[(split, name)] = ids


@pytest.fixture(scope="module")
def sparse_tree(tmp_path_factory):
    """Sparse Cityscapes layout: 30-frame snippets around frames 313 and 600, 32x64 labels with fine structure."""
    tree = make_cityscapes_tree(
        tmp_path_factory.mktemp("sparse"), cities=("aachen", "bochum"), annotated_frames=(313, 600), splits=("val",)
    )
    for (split, name), ids in list(tree.label_ids.items()):
        rewrite_label(tree, split, name, with_fine_structure(ids))
    return tree


def dataset_of(root, num_frames=4, score_at="labels"):
    transform = ClipTransform(WORKING, resize_labels=score_at == "working")
    return open_dataset(root, "val", num_frames=num_frames, gt_position="last", transform=transform)


def sequences_of(tree) -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    for _split, name in sorted(tree.label_ids):
        names.setdefault(name.rsplit("_", 1)[0], []).append(name)
    return names


def frames_of(tree, names, corruption: Corruption | None = None) -> torch.Tensor:
    """Normalised [T, 3, h, w] frames at the working size, read from the files (corrupted by name if asked)."""
    frames = []
    for name in names:
        city = name.split("_")[0]
        image = read_image(tree.root / "leftImg8bit_sequence" / "val" / city / f"{name}_leftImg8bit.png")
        frame = resize_frames(torch.from_numpy(image).permute(2, 0, 1)[None], WORKING)[0]
        if corruption is not None:
            frame, _ = corruption.apply(frame.contiguous(), key=name)
        frames.append(frame)
    return normalize(torch.stack(frames).contiguous())


def targets_of(tree, names) -> np.ndarray:
    lut = get_label_set("cityscapes").lut
    return np.stack([lut[tree.label_ids[("val", name)]] for name in names]).astype(np.int64)


def upsampled_argmax(logits: torch.Tensor) -> np.ndarray:
    """[T, C, h, w] logits -> [T, H, W] classes at the label size (bilinear, then argmax)."""
    return F.interpolate(logits, size=LABEL_SIZE, mode="bilinear", align_corners=False).argmax(dim=1).numpy()


def stream_predictions(model, frames: torch.Tensor) -> np.ndarray:
    """The whole sequence through the model's clip forward (not evaluate_model's step loop)."""
    with torch.no_grad():
        return upsampled_argmax(model(frames[None])[0][0])


def miou(pred: np.ndarray, target: np.ndarray, num_classes: int = 19) -> float:
    """Mean IoU from per-class masks over the classes present in ground truth or prediction."""
    valid = target != IGNORE
    ious = []
    for c in range(num_classes):
        is_gt, is_pred = valid & (target == c), valid & (pred == c)
        union = np.sum(is_gt | is_pred)
        if union:
            ious.append(np.sum(is_gt & is_pred) / union)
    return float(np.mean(ious))


# ----------------------------------------------------------------------------------------- every frame once


@pytest.mark.parametrize("name", ["vanilla-none-small-shallow", "vanilla-crnn-small-shallow"])
def test_stream_scores_every_labelled_frame_once_at_label_resolution(long_tree, name):
    model = tiny_model(name)
    results = evaluate_model(model, dataset_of(long_tree.root), tc=False, progress=False)
    assert results.mode == "stream" and results.score_at == "labels"
    assert results.sequences == 2 and results.frames_scored == 2 * FRAMES
    assert results.scored.pixels == 2 * FRAMES * LABEL_SIZE[0] * LABEL_SIZE[1] - np.sum(
        targets_of(long_tree, [n for names in sequences_of(long_tree).values() for n in names]) == IGNORE
    )
    preds, targets = [], []
    for names in sequences_of(long_tree).values():
        preds.append(stream_predictions(model, frames_of(long_tree, names)))
        targets.append(targets_of(long_tree, names))
    assert results.miou == pytest.approx(miou(np.concatenate(preds), np.concatenate(targets)), abs=1e-12)

    windows = evaluate_model(model, dataset_of(long_tree.root), mode="windows", tc=False, progress=False)
    assert windows.mode == "windows" and windows.frames_scored == 2 * (FRAMES - 3), (
        "4-frame windows leave out the first 3 frames of each sequence"
    )


def test_working_size_scoring_is_an_option_and_differs(long_tree):
    model = tiny_model("vanilla-crnn-small-shallow")
    working = evaluate_model(
        model, dataset_of(long_tree.root, score_at="working"), score_at="working", tc=False, progress=False
    )
    labels = evaluate_model(model, dataset_of(long_tree.root), tc=False, progress=False)
    names = [n for names in sequences_of(long_tree).values() for n in names]
    downsampled = resize_labels(torch.from_numpy(targets_of(long_tree, names)), WORKING)
    assert working.score_at == "working" and working.scored.pixels == int((downsampled != IGNORE).sum())
    assert working.miou != pytest.approx(labels.miou, abs=1e-4)


def test_per_position_means_frames_of_context_on_the_same_frames(long_tree):
    context = 4
    dataset = dataset_of(long_tree.root, num_frames=context)
    temporal = tiny_model("vanilla-crnn-small-shallow")
    results = evaluate_model(temporal, dataset, per_position="auto", tc=False, progress=False)
    position = results.per_position
    assert position is not None
    anchors = [t for t in range(FRAMES) if t % context == context - 1]  # 3, 7, 11, 15
    assert position.mode == "context" and position.every == context
    assert position.frames == [2 * len(anchors)] * context
    sequences = list(sequences_of(long_tree).values())
    with torch.no_grad():
        for seen in range(1, context + 1):
            preds, targets = [], []
            for names in sequences:
                frames = frames_of(long_tree, names)
                for t in anchors:
                    logits = temporal(frames[None, t - seen + 1 : t + 1])[0][0, -1:]
                    preds.append(upsampled_argmax(logits)[0])
                    targets.append(targets_of(long_tree, [names[t]])[0])
            assert position.miou[seen - 1] == pytest.approx(miou(np.stack(preds), np.stack(targets)), abs=1e-12)
        streamed = [stream_predictions(temporal, frames_of(long_tree, names))[anchors] for names in sequences]
        anchor_targets = [targets_of(long_tree, [names[t] for t in anchors]) for names in sequences]
    assert position.stream_miou == pytest.approx(
        miou(np.concatenate(streamed), np.concatenate(anchor_targets)), abs=1e-12
    )
    assert len(set(position.miou)) > 1, "a recurrent model depends on how much it has seen"

    per_frame = evaluate_model(
        tiny_model("vanilla-none-small-shallow"), dataset, per_position="context", tc=False, progress=False
    ).per_position
    assert per_frame is not None
    assert per_frame.miou == [per_frame.stream_miou] * context, "a per-frame model ignores its context"


def video_consistency(targets: np.ndarray, preds: np.ndarray, n: int) -> list[float]:
    """VC_n of every run of n frames: pixels right and constant throughout / pixels constant in the truth."""
    scores = []
    for start in range(len(targets) - n + 1):
        truth, guess = targets[start : start + n], preds[start : start + n]
        constant = np.all(truth == truth[0], axis=0) & (truth[0] != IGNORE)
        if constant.sum():
            scores.append(np.sum(constant & np.all(guess == truth[0], axis=0)) / constant.sum())
    return scores


def test_mvc_runs_over_whole_sequences(long_tree):
    model = tiny_model("vanilla-crnn-small-shallow")
    results = evaluate_model(model, dataset_of(long_tree.root), tc=True, progress=False)
    assert results.mvc_runs == {"8": 2 * (FRAMES - 7), "16": 2 * (FRAMES - 15)}
    assert results.tc_pairs == 2 * (FRAMES - 1)
    scores: dict[int, list[float]] = {8: [], 16: []}
    for names in sequences_of(long_tree).values():
        preds = stream_predictions(model, frames_of(long_tree, names))
        for n in scores:
            scores[n] += video_consistency(targets_of(long_tree, names), preds, n)
    assert 0 < np.mean(scores[16]) < 1
    assert results.mvc_8 == pytest.approx(np.mean(scores[8]))
    assert results.mvc_16 == pytest.approx(np.mean(scores[16]))


def test_sparse_cityscapes_keeps_its_windows(cityscapes_tree):
    dataset = open_dataset(cityscapes_tree.root, "val", num_frames=3, gt_position="last", transform=ClipTransform())
    results = evaluate_model(tiny_model("vanilla-none-small-shallow"), dataset, tc=False, progress=False)
    assert results.mode == "windows" and results.windows == len(cityscapes_tree.annotated["val"])
    assert results.frames_scored == results.windows
    assert results.per_position is not None and results.per_position.mode == "context"


def test_each_figure_is_printed_once(long_tree):
    model = tiny_model("vanilla-none-small-shallow")
    results = evaluate_model(model, dataset_of(long_tree.root), tc=False, progress=False)
    markdown = results_markdown(results)
    header = next(line for line in markdown.splitlines() if line.startswith("| protocol"))
    row = markdown.splitlines()[markdown.splitlines().index(header) + 2]
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    assert len(columns) == len(set(columns)) and {"mIoU", "mAcc", "aAcc"} <= set(columns)
    values = [cell.strip() for cell in row.strip("|").split("|")]
    shown = dict(zip(columns, values))
    assert results.macc is not None and results.aacc is not None
    assert shown["mAcc"] == f"{100 * results.macc:.2f}" and shown["aAcc"] == f"{100 * results.aacc:.2f}"
    assert shown["frames"] == str(2 * FRAMES) and "streamed from its start" in markdown


# ------------------------------------------------------------------------------------------ corrupted frames


def test_corrupted_stream_is_scored_per_corruption_type(long_tree):
    corruption = Corruption(rate=0.6, seed=4)
    model = tiny_model("vanilla-crnn-small-shallow")
    dataset = CorruptedClips(dataset_of(long_tree.root), corruption, deterministic=True)
    results = evaluate_model(model, dataset, tc=False, progress=False)
    preds, targets, codes = [], [], []
    for names in sequences_of(long_tree).values():
        preds.append(stream_predictions(model, frames_of(long_tree, names, corruption)))
        targets.append(targets_of(long_tree, names))
        codes += [corruption.draw(name)[0] for name in names]
    preds, targets, codes = np.concatenate(preds), np.concatenate(targets), np.array(codes)
    assert results.miou == pytest.approx(miou(preds, targets), abs=1e-12)
    groups = results.corruption
    assert groups is not None
    assert groups.clean.miou == pytest.approx(miou(preds[codes == 0], targets[codes == 0]), abs=1e-12)
    assert groups.corrupted.miou == pytest.approx(miou(preds[codes > 0], targets[codes > 0]), abs=1e-12)
    assert set(groups.types) == {CORRUPTIONS[code] for code in codes if code}
    for code in set(codes.tolist()) - {0}:
        chosen = codes == code
        assert groups.types[CORRUPTIONS[code]].miou == pytest.approx(miou(preds[chosen], targets[chosen]))
    clean = evaluate_model(model, dataset_of(long_tree.root), tc=False, progress=False)
    assert clean.corruption is None and clean.miou != pytest.approx(results.miou, abs=1e-6)


# ------------------------------------------------------------------------------------ the official evaluator

# The 19 labelIds cityscapesScripts evaluates (ignoreInEval False); every other id is ignored in evaluation.
OFFICIAL_EVAL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)


def official_miou(gt_folder, pred_folder) -> tuple[float, int]:
    """cityscapesScripts' evalPixelLevelSemanticLabeling, re-implemented: one labelId confusion matrix over all
    ground-truth files at full resolution; IoU = TP / (TP + FP + FN) where FN counts every prediction on the
    class's pixels and FP only predictions on pixels of other evaluated classes; the mean leaves out NaN."""
    confusion = np.zeros((256, 256), dtype=np.int64)
    files = sorted(gt_folder.rglob("*_gtFine_labelIds.png"))
    for path in files:
        stem = path.name[: -len("_gtFine_labelIds.png")]
        gt = np.array(Image.open(path)).astype(np.int64)
        pred = np.array(Image.open(pred_folder / f"{stem}_pred.png")).astype(np.int64)
        assert pred.shape == gt.shape, "the official script needs predictions at the ground truth's size"
        np.add.at(confusion, (gt.reshape(-1), pred.reshape(-1)), 1)
    scores = []
    for label in OFFICIAL_EVAL_IDS:
        tp = confusion[label, label]
        fn = confusion[label, :].sum() - tp
        fp = confusion[[other for other in OFFICIAL_EVAL_IDS if other != label], label].sum()
        if tp + fp + fn:
            scores.append(tp / (tp + fp + fn))
    return float(np.mean(scores)), len(files)


def write_checkpoint(path, root, model):
    save_checkpoint(
        path,
        {
            "model_name": "vanilla-crnn-small-shallow",
            "num_classes": 19,
            "label_set": "cityscapes",
            "model": model.state_dict(),
            "normalization": {"mean": list(MEAN), "std": list(STD)},
            "config": {"data": {"root": str(root), "size": list(WORKING)}, "eval": {"num_frames": 3}},
        },
    )


@pytest.mark.parametrize("tree_name", ["sparse_tree", "long_tree"])
def test_evaluate_command_miou_equals_the_official_evaluator(tree_name, request, tmp_path):
    tree = request.getfixturevalue(tree_name)  # labels 32x64, working size 16x32
    checkpoint = tmp_path / "best.pt"
    write_checkpoint(checkpoint, tree.root, tiny_model("vanilla-crnn-small-shallow"))
    figures = {}
    for score_at in ("labels", "working"):
        preds = tmp_path / f"preds-{score_at}"
        out = tmp_path / f"{score_at}.json"
        args = ["--checkpoint", str(checkpoint), "--no-tc", "--score-at", score_at, "--out", str(out)]
        assert main(["evaluate", *args, "--save-predictions", str(preds)]) == 0
        results = json.loads(out.read_text())
        official, files = official_miou(tree.root / "gtFine" / "val", preds)
        assert results["frames_scored"] == files, "every ground-truth file is scored once"
        figures[score_at] = (results["miou"], official)
    ours, official = figures["labels"]
    assert ours == pytest.approx(official, abs=1e-12)
    assert figures["working"][0] != pytest.approx(figures["working"][1], abs=1e-4), (
        "scoring at the working size is not what the official script computes"
    )


def test_evaluate_command_gives_corrupted_figures(long_tree, tmp_path):
    checkpoint = tmp_path / "best.pt"
    write_checkpoint(checkpoint, long_tree.root, tiny_model("vanilla-crnn-small-shallow"))
    args = ["evaluate", "--checkpoint", str(checkpoint), "--no-tc", "--per-position", "off"]
    assert main([*args, "--corrupt", "--set", "data.corrupt.kinds=[dark,blur]"]) == 0
    results = json.loads((tmp_path / "best-val-standard-C.json").read_text())
    assert results["run"]["corrupt"] == {"rate": 0.3, "kinds": ["dark", "blur"], "seed": 0}
    assert set(results["corruption"]["types"]) <= {"dark", "blur"} and results["corruption"]["types"]
    assert "per_position" not in results and math.isfinite(results["miou"])
    assert main([*args, "--set", "train.steps=3"]) == 2
    assert main([*args, "--max-samples", "1", "--out", str(tmp_path / "one.json")]) == 0
    one = json.loads((tmp_path / "one.json").read_text())
    assert one["sequences"] == 1 and one["frames_scored"] == FRAMES, "--max-samples counts sequences in stream mode"


def _stream_rank(rank: int, world: int, port: int, root: str, weights: str, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = build_model("vanilla-crnn-small-shallow", num_classes=19)
        model.load_state_dict(torch.load(weights))
        results = evaluate_model(model.eval(), dataset_of(root), progress=False)
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump(results.to_dict(), f)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_stream_whole_sequences_with_the_figures_of_one_process(long_tree, tmp_path):
    import socket

    model = tiny_model("vanilla-crnn-small-shallow")
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(
        _stream_rank, args=(2, port, str(long_tree.root), str(tmp_path / "weights.pt"), str(tmp_path)), nprocs=2
    )
    first = json.loads((tmp_path / "rank0.json").read_text())
    second = json.loads((tmp_path / "rank1.json").read_text())
    single = evaluate_model(model, dataset_of(long_tree.root), progress=False).to_dict()
    assert first == second and first["sequences"] == 2 and first["frames_scored"] == 2 * FRAMES
    for key in ("miou", "aacc", "pixels", "tc", "tc_pairs", "mvc_8", "mvc_16", "mvc_runs"):
        assert first[key] == pytest.approx(single[key]), key
    assert first["per_position"]["miou"] == pytest.approx(single["per_position"]["miou"])


# ----------------------------------------------------------------------------------------------- training


def training_config(root, **eval_section):
    from vidseg.config import config_from_dict

    raw = {
        "model": {"name": "vanilla-crnn-small-shallow"},
        "data": {"root": str(root), "train_split": "val", "size": list(WORKING), "num_frames": 2, "batch_size": 2},
        "train": {"steps": 2, "log_every": 1, "tensorboard": False},
        "eval": {"every_epochs": 0, "every_steps": 1, "num_frames": 2, **eval_section},
    }
    return config_from_dict(raw, source="test config", overrides=["data.corrupt.rate=0.5", "data.corrupt.seed=2"])


def test_training_validates_on_corrupted_frames_and_ends_naming_the_best_checkpoint(long_tree, tmp_path):
    from vidseg.train import train

    messages: list[str] = []
    result = train(training_config(long_tree.root), tmp_path / "run", log=messages.append)
    validation = result.metrics["val"]
    assert validation["mode"] == "stream" and validation["frames_scored"] == 2 * FRAMES
    corruption = Corruption(rate=0.5, seed=2)
    expected = {CORRUPTIONS[corruption.draw(name)[0]] for name in long_tree.codes.values()} - {"clean"}
    assert set(validation["corruption"]["types"]) == expected
    best_step = result.metrics["best_step"]
    assert messages[-1] == (
        f"stopped at step 2 (epoch {result.epoch}): budget train.steps=2; best checkpoint: "
        f"{tmp_path / 'run' / 'best.pt'} (validation mIoU {result.metrics['best_miou']:.4f} at step {best_step})"
    )

    config = training_config(long_tree.root, every_steps=0)
    train(config, tmp_path / "quiet", log=messages.append)
    assert messages[-1].startswith("stopped at step 2") and "no validation" in messages[-1]
