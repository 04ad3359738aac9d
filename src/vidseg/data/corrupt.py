"""Corrupted frames: the SynthCity corruptions, for generated and for real video alike.

``corrupt_image`` is the one implementation of the six corruptions (SynthCity renders its bursts with it).
``Corruption`` turns them into a per-frame transform for any dataset (a "-C" variant, like CamVid-C):

- each frame is corrupted with probability ``rate``, by one of ``kinds`` drawn uniformly; the draws of the
  frames are independent (SynthCity's bursts of 1-3 consecutive frames are not reproduced);
- a frame with a ``key`` (its name: evaluation) draws from a generator seeded by ``(seed, key)``, so that the
  same frame gets the same corruption whichever worker loads it, in whatever order, in whichever window;
  without a key (training) the draw comes from the sample's torch generator (or torch's global RNG);
- the corruption is applied to the uint8 frame at the working size, after resizing; labels are untouched (they
  describe the clean scene), and a frame that is already corrupted (a SynthCity frame with a code) is left as is.

Codes index ``CORRUPTIONS`` (0 = clean), the codes that samples carry in ``corruption`` and that evaluation
reports per type.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vidseg.data.clips import WrappedClips
from vidseg.data.transforms import denormalize, normalize

CORRUPTIONS = ("clean", "noise", "dark", "overexposed", "blur", "dropout", "occlusion")
KINDS = CORRUPTIONS[1:]


def box_blur_rows(image: np.ndarray, length: int) -> np.ndarray:
    """Mean over a horizontal window of ``length`` pixels (edges replicated), float32 ``[H, W, C]``."""
    pad = length // 2
    padded = np.pad(image, ((0, 0), (pad + 1, length - pad - 1), (0, 0)), mode="edge")
    summed = np.cumsum(padded, axis=1, dtype=np.float64)
    return ((summed[:, length:] - summed[:, :-length]) / length).astype(np.float32)


def corrupt_image(rng: np.random.Generator, image: np.ndarray, kind: str, step: int = 0) -> np.ndarray:
    """The corrupted version of a clean float32 RGB frame ``[H, W, 3]`` (values 0..255, not clipped).

    ``step`` counts frames into an event (the occlusion moves further in on each). Kinds:
    ``noise``: contrast cut to 15-40% and Gaussian noise of sigma 90-140 grey levels;
    ``dark`` / ``overexposed``: the image quantised to 1-3 grey levels just above black / below white;
    ``blur``: horizontal motion blur over 25-45% of the width; ``dropout``: 1-3 rectangles of 35-75% of the
    frame's area replaced by black, flat grey or noise; ``occlusion``: a dark blob over 30-55% of the frame,
    entering from one side.
    """
    height, width = image.shape[:2]
    if kind == "noise":
        mean = image.mean(axis=(0, 1), keepdims=True)
        contrast = rng.uniform(0.15, 0.4)
        sigma = rng.uniform(90, 140)
        return mean + (image - mean) * contrast + rng.normal(0, sigma, image.shape).astype(np.float32)
    if kind in ("dark", "overexposed"):
        levels = int(rng.integers(1, 4))
        gray = image.mean(axis=2, keepdims=True) * 0.5 + image * 0.5
        quantised = np.floor(gray / 256.0 * (levels + 1))
        return quantised if kind == "dark" else 255.0 - (levels - quantised)
    if kind == "blur":
        length = max(2, int(width * rng.uniform(0.25, 0.45)))
        blurred = box_blur_rows(image, length)
        vertical = max(1, length // 8)
        blurred = box_blur_rows(blurred.transpose(1, 0, 2), vertical).transpose(1, 0, 2)
        return blurred * rng.uniform(0.8, 1.1)
    if kind == "dropout":
        out = image.copy()
        for _ in range(int(rng.integers(1, 4))):
            area = rng.uniform(0.35, 0.75)
            box_h = int(np.clip(height * np.sqrt(area) * rng.uniform(0.7, 1.3), 1, height))
            box_w = int(np.clip(width * area * height / max(box_h, 1) * 1.0, 1, width))
            r0, c0 = int(rng.integers(0, height - box_h + 1)), int(rng.integers(0, width - box_w + 1))
            fill = rng.integers(3)
            if fill == 0:
                out[r0 : r0 + box_h, c0 : c0 + box_w] = 0.0
            elif fill == 1:
                out[r0 : r0 + box_h, c0 : c0 + box_w] = rng.uniform(60, 200)
            else:
                out[r0 : r0 + box_h, c0 : c0 + box_w] = rng.uniform(0, 255, (box_h, box_w, 3))
        return out
    if kind == "occlusion":
        # An ellipse entering from one side; its inner edge moves further in on every frame of the event.
        edge = width * min(rng.uniform(0.35, 0.6) + 0.1 * step, 0.9)
        radius_x, radius_y = width * 0.5, height * rng.uniform(0.8, 1.0)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        if rng.random() < 0.5:
            xx = width - 1 - xx
        inside = ((xx - (edge - radius_x)) / radius_x) ** 2 + ((yy - height * 0.55) / radius_y) ** 2 < 1.0
        tone = rng.uniform(15, 60, 3).astype(np.float32)
        texture = 1.0 + 0.25 * rng.standard_normal((height, width, 1)).astype(np.float32)
        return np.where(inside[:, :, None], tone * texture, image)
    raise ValueError(f"unknown corruption {kind!r}; valid kinds are: {', '.join(KINDS)}")


def key_seed(seed: int, key: str) -> int:
    """A 64-bit seed from ``(seed, key)``; stable across processes and runs (unlike ``hash``)."""
    digest = hashlib.blake2b(f"{int(seed)}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass(frozen=True)
class Corruption:
    """Per-frame corruption of a dataset (see the module docstring).

    Args:
        rate: probability that a frame is corrupted, in [0, 1].
        kinds: the corruptions drawn from (uniformly), a non-empty subset of ``KINDS``.
        seed: with a frame's key, fixes its corruption.
    """

    rate: float
    kinds: tuple[str, ...] = KINDS
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.rate) <= 1.0:
            raise ValueError(f"corruption rate must be in [0, 1], got {self.rate}")
        unknown = [kind for kind in self.kinds if kind not in KINDS]
        if unknown or not self.kinds or len(set(self.kinds)) != len(self.kinds):
            raise ValueError(
                f"corruption kinds must be distinct names from {', '.join(KINDS)}; got {list(self.kinds)}"
            )
        object.__setattr__(self, "kinds", tuple(self.kinds))

    def draw(self, key: str | None = None, generator: torch.Generator | None = None) -> tuple[int, int]:
        """(code, seed of the corruption's own randomness) for one frame."""
        if key is not None:
            rng = np.random.default_rng(key_seed(self.seed, key))
        else:
            rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
        if rng.random() >= self.rate:
            return 0, 0
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        return CORRUPTIONS.index(kind), int(rng.integers(2**62))

    def apply(
        self, frame: torch.Tensor, key: str | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, int]:
        """A uint8 frame ``[3, H, W]`` corrupted or not, and its code (0 = left clean)."""
        code, seed = self.draw(key, generator)
        if code == 0:
            return frame, 0
        return corrupt_frame(frame, CORRUPTIONS[code], np.random.default_rng(seed)), code

    def apply_clip(
        self,
        frames: torch.Tensor,
        codes: torch.Tensor,
        keys: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Corrupt the clean frames (``codes == 0``) of a uint8 clip ``[T, 3, H, W]``; returns new frames and codes.

        ``keys``: one per frame (deterministic draws), or None (draws from ``generator``).
        """
        frames, codes = frames.clone(), codes.clone()
        for t in range(frames.shape[0]):
            if int(codes[t]) != 0:
                continue
            frames[t], codes[t] = self.apply(frames[t], None if keys is None else keys[t], generator)
        return frames, codes


def corrupt_frame(frame: torch.Tensor, kind: str, rng: np.random.Generator) -> torch.Tensor:
    """``corrupt_image`` on a uint8 ``[3, H, W]`` tensor: the result clipped and rounded back to uint8."""
    image = frame.permute(1, 2, 0).numpy().astype(np.float32)
    out = np.clip(corrupt_image(rng, image, kind), 0, 255)
    return torch.from_numpy((out + 0.5).astype(np.uint8)).permute(2, 0, 1).contiguous()


class CorruptedClips(WrappedClips):
    """A clip dataset whose samples' frames are corrupted by ``corruption`` (``corruption`` codes updated).

    Args:
        dataset: samples as ``vidseg.data`` documents them (normalised frames); indices pass through, including
            the ``(index, seed)`` form of seeded training samples.
        corruption: what to apply.
        deterministic: key each frame by its name (from the dataset's ``window_frames`` when it has them, else
            the annotated frame's name and the frame's offset from it, which names it within fixed-stride
            windows): the same frames always get the same corruption (evaluation). Otherwise draw from the
            sample's seed (``(index, seed)``) or torch's global RNG (training).
    """

    def __init__(self, dataset, corruption: Corruption, deterministic: bool):
        super().__init__(dataset)
        self.corruption = corruption
        self.deterministic = deterministic

    def __getitem__(self, index):
        sample = dict(self.dataset[index])
        generator = None
        if isinstance(index, tuple):
            # A stream of its own, independent of the window and crop draws made from the same seed.
            generator = torch.Generator().manual_seed(key_seed(int(index[1]), "corrupt") % 2**63)
        keys = None
        if self.deterministic:
            keys = self._frame_names(index, sample)
        codes = torch.as_tensor(sample["corruption"])
        frames, codes = self.corruption.apply_clip(denormalize(sample["frames"]), codes, keys, generator)
        sample["frames"], sample["corruption"] = normalize(frames), codes
        return sample

    def _frame_names(self, index, sample: dict) -> list[str]:
        window_frames = getattr(self.dataset, "window_frames", None)
        if window_frames is not None and not isinstance(index, tuple):
            # Evaluation windows are fixed (one position, one stride), so no generator is needed.
            frames, _ = window_frames(index)
            return [frame.name for frame in frames]
        gt_index = int(sample["gt_index"])
        return [
            f"{sample['name']}{t - gt_index:+d}" if t != gt_index else str(sample["name"])
            for t in range(sample["frames"].shape[0])
        ]
