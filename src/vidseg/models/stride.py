"""Running a temporal model's state at a lower frame rate than the video it reads.

A temporal unit learns, from its training windows, how far things move from one frame to the next and how many
steps its memory spans. Where the training video is sparser in time than the video the model then reads (CamVid:
labelled train video at 1 Hz, val video at 15 Hz), a state carried from frame to frame sees 15 times less motion
per step than in training and runs for 15 times more steps over the same stretch of video: memory that was never
trained for that drifts.

``StridedState(network, stride)`` carries the state at the training rate instead: frame t continues the state
that frame ``t - stride`` left, so the model still reads every frame and segments it at once (causal, one step
per frame, the same cost as plain streaming), but each of its ``stride`` interleaved states steps through frames
``stride`` apart. ``stride`` = the ratio of the video's frame rate to the training video's (15 for CamVid val
after 1 Hz training); 1 is plain streaming. The first ``stride`` frames start from the zero state.
"""

from __future__ import annotations

from typing import Any

import torch

from vidseg.models.unet import State

StridedStates = tuple[State, ...]
"""The states the last ``stride`` frames left, oldest first (fewer at the start of a video)."""


def check_stride(stride: object) -> int:
    """``stride`` as a frame count; ValueError unless it is a whole number >= 1."""
    if isinstance(stride, bool) or not isinstance(stride, int | float) or int(stride) != stride or stride < 1:
        raise ValueError(f"state stride must be a whole number of frames >= 1, got {stride!r}")
    return int(stride)


class StridedState:
    """A ``step(frame, state) -> (logits, state)`` model whose state is carried ``stride`` frames apart.

    The state it returns is the tuple of the last ``stride`` frames' model states (``StridedStates``); ``None``
    starts a video. Other attributes (``num_classes``, ``is_temporal``, ``eval`` ...) are the wrapped model's.

    Args:
        network: anything with ``step(frame, state) -> (logits, state)``: a ``RecurrentUNet`` or one of its
            inference copies.
        stride: frames between the frame that leaves a state and the frame that continues it (>= 1).
    """

    def __init__(self, network: Any, stride: int):
        self.network = network
        self.stride = check_stride(stride)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.network, name)

    def step(self, frame: torch.Tensor, state: StridedStates | None = None) -> tuple[torch.Tensor, StridedStates]:
        recent = state or ()
        if len(recent) > self.stride:
            raise ValueError(f"a strided state holds at most {self.stride} states, got {len(recent)}")
        carried = recent[0] if len(recent) == self.stride else None
        logits, new = self.network.step(frame, carried)
        kept = recent[1:] if len(recent) == self.stride else recent
        return logits, (*kept, new)
