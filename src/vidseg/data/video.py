"""Video input and output: read frames from a video file, a folder of images or a glob; write videos and
folders of images atomically.

Frames are numpy arrays ``[H, W, 3]``, uint8, RGB. Reading streams one frame at a time, so memory does not
depend on the length of the video. Video files are decoded with PyAV, which ships its own FFmpeg, so every
container and codec FFmpeg knows works (mp4, mov, avi, mkv, webm, ...). Image folders and globs are read in
natural order (``frame2`` before ``frame10``).

Video metadata survives a pass through vidseg: frames of a rotated video (a phone's display matrix) are read
upright, as players show them, and a writer given that rotation stores them in the input's orientation with the
same display matrix; each frame's timestamp (``FrameSource.timed_frames``) can be handed to the writer, so a
variable frame rate video keeps its timing instead of being re-timed to a constant rate.

Writers never leave half a file behind: a video is encoded into a temporary file next to its target and renamed
at the end; a folder of images is filled as a temporary sibling folder and renamed at the end. On an exception
the temporary output is deleted and an existing target is left untouched.
"""

from __future__ import annotations

import glob as globlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vidseg.errors import VidsegError
from vidseg.fileio import (
    atomic_path,
    check_writable,
    explained_write_errors,
    make_folder,
    output_error,
    temporary_prefix,
)

if TYPE_CHECKING:
    from av.container import OutputContainer
    from av.video.stream import VideoStream

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Output containers and how each is encoded; see VideoWriter for the pixel formats.
VIDEO_CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}
# A folder of frames carries no frame rate; Cityscapes sequences were recorded at 17 frames per second.
DEFAULT_FRAME_RATE = Fraction(17)
# Decoding fewer frames than the container announces by more than this share means the file is cut short.
TRUNCATION_TOLERANCE = 0.02

_GLOB_CHARACTERS = re.compile(r"[*?\[]")


def natural_sort_key(text: str) -> tuple:
    """Sort key that orders runs of digits by their value: ``frame2`` < ``frame10``, case-insensitively."""
    parts = re.split(r"(\d+)", text)
    return tuple(int(part) if index % 2 else part.lower() for index, part in enumerate(parts)), text


def open_frames(
    source: str | os.PathLike | list[str | os.PathLike], frame_rate: float | Fraction | None = None
) -> FrameSource:
    """Open a video file, a folder of images, a glob pattern of images or a list of image files for reading.

    Args:
        source: a video file, a folder (its image files, not its subfolders), a pattern such as
            ``"clip/*.png"``, or a list of image files (what a shell makes of an unquoted pattern); folders,
            patterns and lists are read in natural order.
        frame_rate: frames per second; overrides the video's own rate, and sets the rate of image sequences
            (default ``DEFAULT_FRAME_RATE``).

    Raises:
        VidsegError: the source does not exist, holds no frames, or the video cannot be opened.
    """
    rate = None if frame_rate is None else Fraction(frame_rate).limit_denominator(1001)
    if rate is not None and rate <= 0:
        raise VidsegError(f"frame rate must be positive, got {frame_rate}")
    if isinstance(source, (list, tuple)):
        if len(source) != 1:
            return ImageSequence.from_files([Path(p) for p in source], rate)
        source = source[0]
    path = Path(source)
    if path.is_dir():
        return ImageSequence.from_folder(path, rate)
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            return ImageSequence([path], str(path), rate)
        return VideoFile(path, rate)
    if _GLOB_CHARACTERS.search(str(source)):
        return ImageSequence.from_glob(str(source), rate)
    raise VidsegError(
        f"input {source} does not exist; pass a video file, a folder of frames or a quoted glob such as "
        "'frames/*.png'"
    )


class FrameSource:
    """Frames of one video, read lazily in order.

    Attributes:
        name: how messages refer to the source (a path or a pattern).
        frame_rate: frames per second, as an exact fraction (30000/1001 for NTSC video); the average rate of a
            variable frame rate video.
        num_frames: the number of frames, or None where the container does not say.
        time_base: the unit of the timestamps that ``timed_frames`` yields, in seconds.
        rotation: counter-clockwise quarter turns, in degrees (0, 90, 180 or -90), by which the stored picture
            is turned for display; frames are yielded already turned, and ``VideoWriter(rotation=...)`` keeps it.
    """

    name: str
    frame_rate: Fraction
    num_frames: int | None
    time_base: Fraction
    rotation: int = 0

    def timed_frames(self) -> Iterator[tuple[np.ndarray, int]]:
        """Yield ``(frame, pts)``: each frame upright, with its presentation time in units of ``time_base``."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[np.ndarray]:
        for frame, _ in self.timed_frames():
            yield frame

    def frame_name(self, index: int) -> str:
        """A file stem for outputs of frame ``index`` (the image's own stem for image sequences)."""
        return f"{index:06d}"

    def check_size(self, frame: np.ndarray, first_shape: tuple[int, ...] | None, where: str) -> tuple[int, ...]:
        if first_shape is not None and frame.shape != first_shape:
            raise VidsegError(
                f"{where} is {_size(frame.shape)} but the first frame of {self.name} is {_size(first_shape)}; "
                "every frame of a video must have one size: resize the frames or split the input where the "
                "size changes"
            )
        return frame.shape


class ImageSequence(FrameSource):
    """Image files read in the given order, converted to RGB."""

    def __init__(self, files: list[Path], name: str, frame_rate: Fraction | None = None):
        self.files = files
        self.name = name
        self.frame_rate = frame_rate or DEFAULT_FRAME_RATE
        self.time_base = 1 / self.frame_rate
        self.num_frames = len(files)
        stems = [p.stem for p in files]
        # frame.png and frame.jpg (or a glob over several folders) would otherwise share an output name.
        self._unique_stems = len(set(stems)) == len(stems)

    @classmethod
    def from_folder(cls, folder: Path, frame_rate: Fraction | None = None) -> ImageSequence:
        entries = list(folder.iterdir())
        files = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        if not files:
            raise VidsegError(
                f"folder {folder} contains no frames: expected image files ({', '.join(IMAGE_EXTENSIONS)}), "
                f"found {_describe_entries(entries)}; pass the folder that holds the frames, or a video file"
            )
        return cls(sorted(files, key=lambda p: natural_sort_key(p.name)), str(folder), frame_rate)

    @classmethod
    def from_glob(cls, pattern: str, frame_rate: Fraction | None = None) -> ImageSequence:
        matches = [Path(p) for p in globlib.glob(pattern)]
        files = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        if not files:
            raise VidsegError(
                f"pattern {pattern!r} matches no image files ({', '.join(IMAGE_EXTENSIONS)}); it matches "
                f"{_describe_entries(matches)}; check the pattern, and quote it so that the shell does not expand it"
            )
        return cls(sorted(files, key=lambda p: natural_sort_key(str(p))), pattern, frame_rate)

    @classmethod
    def from_files(cls, files: list[Path], frame_rate: Fraction | None = None) -> ImageSequence:
        if not files:
            raise VidsegError("no input files given; pass a video file, a folder of frames or image files")
        for path in files:
            if not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
                reason = "does not exist" if not path.exists() else "is not an image file"
                raise VidsegError(
                    f"input {path} {reason}; several inputs must all be image files "
                    f"({', '.join(IMAGE_EXTENSIONS)}), read as the frames of one video in natural order"
                )
        name = f"{files[0]} ... ({len(files)} files)"
        return cls(sorted(files, key=lambda p: natural_sort_key(str(p))), name, frame_rate)

    def frame_name(self, index: int) -> str:
        stem = self.files[index].stem
        return stem if self._unique_stems else f"{index:06d}_{stem}"

    def timed_frames(self) -> Iterator[tuple[np.ndarray, int]]:
        from PIL import Image, UnidentifiedImageError

        from vidseg.data.cityscapes import rgb_array

        first_shape = None
        for index, path in enumerate(self.files):
            try:
                with Image.open(path) as image:
                    frame = rgb_array(image)
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
                raise VidsegError(
                    f"frame {path} cannot be read ({error}); replace or delete the file and run again"
                ) from error
            first_shape = self.check_size(frame, first_shape, f"frame {path}")
            yield frame, index


class VideoFile(FrameSource):
    """A video decoded with PyAV, one frame at a time (the first video stream of the file).

    Frames are turned upright by the stream's display matrix (quarter turns; a mirroring in the matrix is not
    applied), and come with their own timestamps in the stream's time base, unless ``frame_rate`` overrides the
    video's rate: then frame ``i`` is timed at ``i / frame_rate``.
    """

    def __init__(self, path: Path, frame_rate: Fraction | None = None):
        import av

        self.path = path
        self.name = str(path)
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise VidsegError(f"{path} contains no video stream; pass a video file or a folder of frames")
                stream = container.streams.video[0]
                native_rate = stream.average_rate or stream.guessed_rate or stream.base_rate
                self.expected_frames = _announced_frames(container, stream, native_rate)
                self.expected_seconds = _announced_seconds(container, stream)
                stream_time_base = stream.time_base
                angle = _display_rotation(container, stream)
        except av.error.FFmpegError as error:
            raise VidsegError(
                f"video {path} cannot be opened ({_ffmpeg_message(error)}): the file is not a video, is truncated "
                "(recording or download interrupted) or uses a codec FFmpeg does not know; re-encode or "
                "re-download it, or pass a folder of frames"
            ) from error
        self.rotation = _quarter_turn(angle, path)
        self.native_rate = Fraction(native_rate) if native_rate else DEFAULT_FRAME_RATE
        self.frame_rate = frame_rate or self.native_rate
        self._own_timing = frame_rate is None and stream_time_base is not None
        self.time_base = Fraction(stream_time_base) if self._own_timing else 1 / self.frame_rate
        self.num_frames = self.expected_frames

    def timed_frames(self) -> Iterator[tuple[np.ndarray, int]]:
        import av

        decoded = 0
        first_shape = None
        last_end = None  # seconds
        previous_pts = None
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for av_frame in container.decode(stream):
                    frame = av_frame.to_ndarray(format="rgb24")
                    if self.rotation:
                        frame = np.ascontiguousarray(np.rot90(frame, self.rotation // 90))
                    first_shape = self.check_size(frame, first_shape, f"frame {decoded} of {self.path}")
                    pts = av_frame.pts if self._own_timing else decoded
                    if pts is None:  # a container without timestamps: the frame follows the previous one
                        pts = 0 if previous_pts is None else previous_pts + _ticks(1 / self.frame_rate, self.time_base)
                    previous_pts = pts
                    last_end = float(pts * self.time_base + 1 / self.native_rate)
                    decoded += 1
                    yield frame, pts
        except av.error.FFmpegError as error:
            raise VidsegError(
                f"video {self.path} cannot be decoded after frame {decoded} ({_ffmpeg_message(error)}): the file "
                "is damaged or truncated; re-encode or re-download it (ffmpeg -i in.mp4 out.mp4 keeps what is "
                "readable)"
            ) from error
        if decoded == 0:
            raise VidsegError(f"video {self.path} contains no decodable frames; re-encode or re-download it")
        expected = self.expected_frames
        if expected and expected - decoded > max(1, TRUNCATION_TOLERANCE * expected) and self._ends_early(last_end):
            raise VidsegError(
                f"video {self.path} ended after {decoded} frames but its header announces {expected}: the file is "
                "truncated; re-download it, or re-encode what is readable (ffmpeg -i in.mp4 out.mp4) and use that"
            )

    def _ends_early(self, last_end: float | None) -> bool:
        # Fewer frames than announced is not a loss where the frames still reach the announced end: a variable
        # frame rate video's count is estimated from its average rate, and an AVI counts its dropped frames.
        if self.expected_seconds is None or last_end is None or not self._own_timing:
            return True
        margin = max(float(1 / self.native_rate), TRUNCATION_TOLERANCE * self.expected_seconds)
        return self.expected_seconds - last_end > margin


def _announced_frames(container, stream, rate) -> int | None:
    if stream.frames:
        return int(stream.frames)
    if container.duration and rate:
        return round(container.duration / 1_000_000 * rate)  # container.duration is in microseconds
    return None


def _display_rotation(container, stream) -> float:
    # PyAV shows the display matrix (stream side data) only on decoded frames, where the decoder attaches it.
    import av

    try:
        first = next(container.decode(stream), None)
    except av.error.FFmpegError:
        return 0  # a damaged start: reading the frames says so, naming the frame
    return getattr(first, "rotation", 0) or 0


def _announced_seconds(container, stream) -> float | None:
    """When the last frame ends, by the header, in seconds on the stream's clock."""
    if stream.duration and stream.time_base:
        return float(((stream.start_time or 0) + stream.duration) * stream.time_base)
    if container.duration:  # microseconds
        return ((container.start_time or 0) + container.duration) / 1_000_000
    return None


def _quarter_turn(angle: float, path: Path) -> int:
    turns = round(angle / 90)
    if abs(angle - 90 * turns) > 1:
        raise VidsegError(
            f"video {path} is displayed turned by {angle:g} degrees; vidseg turns videos by quarter turns only: "
            "re-encode it upright (ffmpeg -i in.mp4 out.mp4 applies the rotation)"
        )
    return (0, 90, 180, -90)[turns % 4]


def _ticks(seconds: Fraction, time_base: Fraction) -> int:
    """``seconds`` in units of ``time_base``, at least one."""
    return max(1, round(seconds / time_base))


def _ffmpeg_message(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]} (width x height)"


def _describe_entries(entries: list[Path]) -> str:
    if not entries:
        return "nothing"
    names = ", ".join(sorted(p.name + ("/" if p.is_dir() else "") for p in entries)[:5])
    return f"{len(entries)} other entries ({names}{', ...' if len(entries) > 5 else ''})"


# ------------------------------------------------------------------------------------------------- writers


def check_output_file(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing ``path`` unless ``overwrite``; return it as a Path."""
    path = Path(path)
    if path.is_dir():
        raise VidsegError(f"output {path} is a folder; pass a file name such as {path / 'segmented.mp4'}")
    if path.exists() and not overwrite:
        raise VidsegError(f"output {path} already exists; pass --overwrite to replace it, or choose another name")
    check_writable(path)
    return path


class VideoWriter:
    """Encode RGB frames into a video file; use as a context manager.

    The container follows the file's extension (``VIDEO_CONTAINERS``): mp4, mov and mkv hold H.264 (yuv420p,
    or yuv444p where the width or height is odd, which 4:2:0 cannot represent), avi holds MPEG-4 Part 2.
    Without timestamps, frame ``i`` is shown at ``i / frame_rate``, so the rate and the frame count are preserved
    exactly. With them (``write(frame, pts)`` in units of ``time_base``), each frame is shown at its own time, so a
    variable frame rate video keeps its timing; AVI holds a constant rate only, so there each frame takes the
    nearest free slot of ``frame_rate`` (gaps become dropped frames).
    The file appears at ``path`` only when the ``with`` block ends without an exception.

    Args:
        path: the video to write; its folder is created if missing.
        frame_rate: frames per second (the average rate where timestamps are given).
        overwrite: replace an existing file (otherwise VidsegError).
        quality: H.264 constant rate factor (lower is better and larger; 18 is visually lossless).
        time_base: the unit of the timestamps given to ``write``, in seconds (default ``1 / frame_rate``).
        rotation: counter-clockwise quarter turn (degrees) of the source's display matrix. Frames are given
            upright; mp4, mov and mkv store them turned back with that display matrix, so the file has the source's
            orientation and players show it upright; avi, which has no display matrix, stores them upright.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        frame_rate: Fraction | int,
        overwrite: bool = False,
        quality: int = 20,
        *,
        time_base: Fraction | None = None,
        rotation: int = 0,
    ):
        self.path = check_output_file(path, overwrite)
        self.container_format = VIDEO_CONTAINERS.get(self.path.suffix.lower())
        if self.container_format is None:
            raise VidsegError(
                f"output {self.path} has an unsupported extension; use one of {', '.join(VIDEO_CONTAINERS)}"
            )
        if rotation % 90:
            raise ValueError(f"rotation must be a quarter turn, got {rotation}")
        self.frame_rate = Fraction(frame_rate)
        self.quality = quality
        self.num_frames = 0
        self.input_time_base = Fraction(time_base) if time_base is not None else 1 / self.frame_rate
        # AVI stores one tick per frame slot; its encoder (MPEG-4 Part 2) refuses fine time bases anyway.
        self.time_base = 1 / self.frame_rate if self.container_format == "avi" else self.input_time_base
        self.rotation = rotation
        self._last_pts: int | None = None
        self._container: OutputContainer | None = None
        self._stream: VideoStream | None = None
        self._atomic: AbstractContextManager[Path] | None = None

    def __enter__(self) -> VideoWriter:
        import av

        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        try:
            self._container = av.open(str(tmp), mode="w", format=self.container_format)
        except BaseException as error:
            self._atomic.__exit__(type(error), error, error.__traceback__)
            raise
        return self

    @property
    def keeps_rotation(self) -> bool:
        """Whether frames are stored in the source's orientation with its display matrix (else upright)."""
        from av.video.stream import VideoStream

        # Older PyAV cannot write a display matrix.
        return self.container_format != "avi" and hasattr(VideoStream, "set_display_rotation")

    def write(self, frame: np.ndarray, pts: int | None = None) -> None:
        """Append one ``[H, W, 3]`` uint8 RGB frame, upright; every frame must have the size of the first.

        ``pts`` is its presentation time in units of ``time_base``; without it (or where it does not come after
        the previous frame's) the frame follows the previous one by ``1 / frame_rate``.
        """
        import av

        assert self._container is not None, "VideoWriter writes inside a `with` block"
        if self.rotation and self.keeps_rotation:
            frame = np.rot90(frame, -(self.rotation // 90))
        if self._stream is None:
            self._stream = self._add_stream(frame.shape[0], frame.shape[1])
        elif (frame.shape[0], frame.shape[1]) != (self._stream.height, self._stream.width):
            raise ValueError(
                f"frame {self.num_frames} is {frame.shape[1]}x{frame.shape[0]}, the video is "
                f"{self._stream.width}x{self._stream.height}"
            )
        av_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        av_frame.pts = self._next_pts(pts)
        av_frame.time_base = self.time_base
        for packet in self._stream.encode(av_frame):
            self._container.mux(packet)
        self.num_frames += 1

    def _next_pts(self, pts: int | None) -> int:
        step = _ticks(1 / self.frame_rate, self.time_base)
        if pts is not None:
            pts = round(pts * self.input_time_base / self.time_base)
        if pts is None or (self._last_pts is not None and pts <= self._last_pts):
            pts = 0 if self._last_pts is None else self._last_pts + step
        self._last_pts = pts
        return pts

    def _add_stream(self, height: int, width: int) -> VideoStream:
        assert self._container is not None, "VideoWriter writes inside a `with` block"
        if self.container_format == "avi":
            stream = self._container.add_stream("mpeg4", rate=self.frame_rate, options={"qscale": "3"})
            stream.pix_fmt = "yuv420p"
        else:
            options = {"crf": str(self.quality), "preset": "veryfast"}
            stream = self._container.add_stream("libx264", rate=self.frame_rate, options=options)
            stream.pix_fmt = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
        stream.width, stream.height = width, height
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        if self.rotation and self.keeps_rotation:
            stream.set_display_rotation(self.rotation)
        return stream

    def __exit__(self, exc_type, exc, traceback) -> None:
        # __enter__ succeeded, so both are set.
        assert self._atomic is not None and self._container is not None
        try:
            if exc_type is None and self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            self._container.close()
            if exc_type is None and self.num_frames == 0:
                raise VidsegError(f"no frames were written to {self.path}; the input produced no frames")
        except BaseException as error:
            self._atomic.__exit__(type(error), error, error.__traceback__)
            raise
        self._atomic.__exit__(exc_type, exc, traceback)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_folder(folder: str | os.PathLike, overwrite: bool, suffix: str = ".png") -> Path:
    """Refuse an existing non-empty ``folder`` unless ``overwrite``; with it, refuse a folder that holds anything
    other than ``suffix`` files, so that a mistyped path never deletes unrelated data."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise VidsegError(f"output folder {folder} is a file; pass a folder name")
    check_writable(folder)
    if folder.is_dir():
        entries = list(folder.iterdir())
        if entries and not overwrite:
            raise VidsegError(
                f"output folder {folder} already exists and is not empty; pass --overwrite to replace it, or "
                "choose another folder"
            )
        foreign = [p for p in entries if not (p.is_file() and p.suffix.lower() == suffix)]
        if foreign:
            raise VidsegError(
                f"output folder {folder} holds {_describe_entries(foreign)} besides {suffix} files; vidseg only "
                "replaces folders it could have written: choose another folder or empty this one yourself"
            )
    return folder


class ImageFolderWriter:
    """Write images into a folder that appears complete or not at all; use as a context manager.

    Images go to a temporary sibling folder, which replaces ``folder`` when the ``with`` block ends without
    an exception (an existing folder is replaced only with ``overwrite``, see ``check_output_folder``).

    Args:
        folder: the folder to create; its parent is created if missing.
        overwrite: replace an existing folder of PNG files.
    """

    def __init__(self, folder: str | os.PathLike, overwrite: bool = False):
        self.folder = check_output_folder(folder, overwrite)
        self.num_images = 0
        self._tmp: Path | None = None

    def __enter__(self) -> ImageFolderWriter:
        make_folder(self.folder.parent, output=self.folder)
        try:
            prefix = temporary_prefix(self.folder.name)
            self._tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=self.folder.parent))
        except OSError as error:
            raise output_error(self.folder, error) from error
        self._tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it owner-only; use the usual mode
        return self

    def write(self, name: str, image: np.ndarray) -> None:
        """Save ``image`` (``[H, W]`` or ``[H, W, 3]`` uint8) as ``name.png``."""
        from PIL import Image

        assert self._tmp is not None, "ImageFolderWriter writes inside a `with` block"
        with explained_write_errors(self.folder):
            Image.fromarray(image).save(self._tmp / f"{name}.png", compress_level=1)
        self.num_images += 1

    def __exit__(self, exc_type, exc, traceback) -> None:
        assert self._tmp is not None, "__enter__ succeeded, so the temporary folder exists"
        if exc_type is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        old = None
        if self.folder.exists():
            old = self.folder.with_name(f"{self._tmp.name}.old")
            os.replace(self.folder, old)
        os.replace(self._tmp, self.folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
