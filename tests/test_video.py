"""Video and frame-folder reading (natural order, exact frames, errors) and atomic video / image-folder writing."""

from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from vidseg.data.video import (
    ImageFolderWriter,
    VideoWriter,
    natural_sort_key,
    open_frames,
)
from vidseg.errors import VidsegError

HEIGHT, WIDTH = 37, 61


def coded_frame(code: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A flat frame whose colour says which frame it is (survives lossy codecs)."""
    return np.full((height, width, 3), (code * 20 % 256, 255 - code * 20 % 256, 128), dtype=np.uint8)


def identify(frame: np.ndarray) -> int:
    return int(round(float(frame[..., 0].mean()) / 20))


def write_test_video(path, num_frames: int, rate=25, codec="libx264", options=None, size=(HEIGHT + 1, WIDTH + 1)):
    """Encode frames with PyAV directly (independently of VideoWriter)."""
    container = av.open(str(path), "w", options=options or {})
    stream = container.add_stream(codec, rate=rate)
    stream.height, stream.width = size
    stream.pix_fmt = "yuv420p"
    for code in range(num_frames):
        frame = av.VideoFrame.from_ndarray(coded_frame(code, *size), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_natural_sort_puts_frame2_before_frame10():
    names = ["frame10.png", "frame2.png", "Frame1.png", "frame2b.png", "frame002.png", "a.png"]
    assert sorted(names, key=natural_sort_key) == [
        "a.png", "Frame1.png", "frame002.png", "frame2.png", "frame2b.png", "frame10.png",
    ]


def test_folder_yields_exactly_its_images_in_natural_order(tmp_path):
    order = [10, 2, 1, 12, 3, 11]
    for code in order:
        Image.fromarray(coded_frame(code)).save(tmp_path / f"frame{code}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / "sub").mkdir()
    Image.fromarray(coded_frame(7)).save(tmp_path / "sub" / "frame7.png")

    source = open_frames(tmp_path)
    frames = list(source)
    assert [identify(f) for f in frames] == sorted(order)
    assert source.num_frames == 6 and source.frame_rate == Fraction(17)
    assert [source.frame_name(i) for i in range(6)] == [f"frame{c}" for c in sorted(order)]
    assert all(f.shape == (HEIGHT, WIDTH, 3) and f.dtype == np.uint8 for f in frames)


def test_glob_selects_matching_images_and_converts_them_to_rgb(tmp_path):
    Image.fromarray(coded_frame(3)).convert("L").save(tmp_path / "b_3.png")
    Image.fromarray(coded_frame(1)).convert("RGBA").save(tmp_path / "b_1.png")
    Image.fromarray(coded_frame(2)).save(tmp_path / "b_2.jpg", quality=95)
    Image.fromarray(coded_frame(9)).save(tmp_path / "other_9.png")
    source = open_frames(str(tmp_path / "b_*"), frame_rate=12.5)
    frames = list(source)
    assert [source.frame_name(i) for i in range(3)] == ["b_1", "b_2", "b_3"]
    assert [f.shape for f in frames] == [(HEIGHT, WIDTH, 3)] * 3
    assert identify(frames[0]) == 1 and identify(frames[1]) == 2
    assert source.frame_rate == Fraction(25, 2)


def test_a_list_of_files_from_an_unquoted_shell_glob_is_read_in_natural_order(tmp_path):
    files = []
    for code in [10, 2, 1]:
        files.append(tmp_path / f"f{code}.png")
        Image.fromarray(coded_frame(code)).save(files[-1])
    assert [identify(f) for f in open_frames(files)] == [1, 2, 10]
    (tmp_path / "clip.mp4").write_bytes(b"x")
    with pytest.raises(VidsegError, match=f"input {tmp_path / 'clip.mp4'} is not an image file"):
        open_frames([*files, tmp_path / "clip.mp4"])


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".avi", ".mov"])
def test_video_writer_round_trip_keeps_count_size_rate_and_content(tmp_path, suffix):
    rate = Fraction(30000, 1001)
    path = tmp_path / "new" / f"clip{suffix}"
    with VideoWriter(path, rate) as writer:
        for code in range(6):
            writer.write(coded_frame(code))
    source = open_frames(path)
    frames = list(source)
    assert len(frames) == 6 and source.num_frames == 6
    assert source.frame_rate == rate
    assert frames[0].shape == (HEIGHT, WIDTH, 3)
    assert [identify(f) for f in frames] == list(range(6))
    assert leftovers(path.parent) == [path.name]


def test_video_file_reads_all_frames_of_a_video_written_by_pyav(tmp_path):
    path = write_test_video(tmp_path / "in.mp4", num_frames=9, rate=Fraction(17))
    source = open_frames(path)
    frames = list(source)
    assert [identify(f) for f in frames] == list(range(9))
    assert source.frame_rate == 17 and source.frame_name(3) == "000003"


def test_missing_input_empty_folder_and_glob_without_matches_are_explained(tmp_path):
    with pytest.raises(VidsegError, match="does not exist"):
        open_frames(tmp_path / "nope.mp4")
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(VidsegError, match=rf"folder {tmp_path} contains no frames.*readme.txt"):
        open_frames(tmp_path)
    with pytest.raises(VidsegError, match="matches no image files"):
        open_frames(str(tmp_path / "*.png"))


def test_garbage_and_truncated_videos_name_the_file(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    with pytest.raises(VidsegError, match=f"video {garbage} cannot be opened"):
        open_frames(garbage)

    full = write_test_video(tmp_path / "full.mp4", num_frames=20).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full[: len(full) // 2])  # the index (moov) is written last, so it is lost
    with pytest.raises(VidsegError, match=f"video {cut} cannot be opened.*truncated"):
        open_frames(cut)

    faststart = write_test_video(tmp_path / "fs.mp4", num_frames=20, options={"movflags": "faststart"})
    data = faststart.read_bytes()
    faststart.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(VidsegError, match=f"video {faststart} cannot be decoded after frame"):
        list(open_frames(faststart))

    mkv = write_test_video(tmp_path / "cut.mkv", num_frames=30)
    data = mkv.read_bytes()
    mkv.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(VidsegError, match=f"video {mkv} ended after .* frames but its header announces 30"):
        list(open_frames(mkv))


def test_frame_size_change_and_unreadable_frame_name_the_file(tmp_path):
    for code in range(3):
        Image.fromarray(coded_frame(code)).save(tmp_path / f"f{code}.png")
    Image.fromarray(coded_frame(3, HEIGHT + 1, WIDTH)).save(tmp_path / "f3.png")
    frames = iter(open_frames(tmp_path))
    assert [identify(next(frames)) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(VidsegError, match=f"frame {tmp_path / 'f3.png'} is 61x38 .* first frame .* is 61x37"):
        next(frames)

    (tmp_path / "f3.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(VidsegError, match=f"frame {tmp_path / 'f3.png'} cannot be read"):
        list(open_frames(tmp_path))


def test_video_writer_refuses_existing_output_and_leaves_nothing_on_error(tmp_path):
    path = tmp_path / "out.mp4"
    path.write_bytes(b"old")
    with pytest.raises(VidsegError, match="already exists.*--overwrite"):
        VideoWriter(path, Fraction(25))
    with pytest.raises(VidsegError, match="unsupported extension"):
        VideoWriter(tmp_path / "out.gif", Fraction(25))

    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(path, Fraction(25), overwrite=True) as writer:
            writer.write(coded_frame(0))
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == ["out.mp4"]

    with VideoWriter(path, Fraction(25), overwrite=True) as writer:
        writer.write(coded_frame(4))
    assert [identify(f) for f in open_frames(path)] == [4]


def test_image_folder_writer_is_all_or_nothing_and_only_replaces_png_folders(tmp_path):
    target = tmp_path / "a" / "masks"
    with pytest.raises(RuntimeError):
        with ImageFolderWriter(target) as writer:
            writer.write("x", np.zeros((4, 5), np.uint8))
            raise RuntimeError
    assert leftovers(tmp_path / "a") == []

    with ImageFolderWriter(target) as writer:
        writer.write("first", np.full((4, 5), 7, np.uint8))
    assert leftovers(target) == ["first.png"]
    assert (np.asarray(Image.open(target / "first.png")) == 7).all()
    with pytest.raises(VidsegError, match="already exists and is not empty"):
        ImageFolderWriter(target)

    with ImageFolderWriter(target, overwrite=True) as writer:
        writer.write("second", np.zeros((4, 5, 3), np.uint8))
    assert leftovers(target) == ["second.png"] and leftovers(tmp_path / "a") == ["masks"]

    (target / "precious.txt").write_text("keep me")
    with pytest.raises(VidsegError, match="precious.txt"):
        ImageFolderWriter(target, overwrite=True)


# ------------------------------------------------------------------------------------------------- metadata

# The display matrix a phone writes for a portrait video recorded with the sensor landscape (16.16 fixed point,
# as in the mp4 'tkhd' box): players turn the stored picture 90 degrees clockwise; FFmpeg reads it as -90.
PORTRAIT_PHONE_MATRIX = [0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30]
STORED_HEIGHT, STORED_WIDTH = 32, 48


def corner_frame(code: int = 0) -> np.ndarray:
    """A stored (landscape) frame, dark but for a red top-left quarter; the green level says which frame it is."""
    frame = np.zeros((STORED_HEIGHT, STORED_WIDTH, 3), np.uint8)
    frame[..., 1] = code * 20
    frame[: STORED_HEIGHT // 2, : STORED_WIDTH // 2, 0] = 255
    return frame


def red_corner(frame: np.ndarray) -> str:
    """Which quarter of the frame is red: 'top-left', 'top-right', 'bottom-left' or 'bottom-right'."""
    height, width = frame.shape[:2]
    quarters = {
        "top-left": frame[: height // 2, : width // 2], "top-right": frame[: height // 2, width // 2 :],
        "bottom-left": frame[height // 2 :, : width // 2], "bottom-right": frame[height // 2 :, width // 2 :],
    }
    reds = {name: float(q[..., 0].mean()) for name, q in quarters.items()}
    best = max(reds, key=reds.__getitem__)
    assert reds[best] > 200 and sorted(reds.values())[-2] < 60, reds  # one clearly red quarter
    return best


def write_phone_video(path, matrix, times_ms, container_format=None):
    """Encode ``corner_frame``s with PyAV, with a display matrix and frame times in milliseconds."""
    container = av.open(str(path), "w", format=container_format)
    stream = container.add_stream("libx264", rate=30)
    stream.height, stream.width, stream.pix_fmt = STORED_HEIGHT, STORED_WIDTH, "yuv420p"
    stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
    if matrix is not None:
        stream.set_display_matrix(matrix)
    for code, time_ms in enumerate(times_ms):
        frame = av.VideoFrame.from_ndarray(corner_frame(code), format="rgb24")
        frame.pts, frame.time_base = time_ms, Fraction(1, 1000)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def stored_video(path) -> tuple[list[np.ndarray], list[Fraction], int]:
    """What the file holds, read with PyAV directly: stored frames, their times in seconds, the display rotation."""
    with av.open(str(path)) as container:
        decoded = list(container.decode(container.streams.video[0]))
    times = [Fraction(f.pts) * f.time_base for f in decoded]
    return [f.to_ndarray(format="rgb24") for f in decoded], times, decoded[0].rotation


needs_display_matrix = pytest.mark.skipif(
    not hasattr(av.video.stream.VideoStream, "set_display_matrix"), reason="this PyAV cannot write a display matrix"
)
VFR_TIMES_MS = [0, 33, 66, 200, 233, 400, 410, 1000]  # a phone slowing down in the dark, a stall, a duplicate burst


# Display matrices of the four quarter turns, in the mp4 layout (rotation read back by FFmpeg, counter-clockwise),
# and where the stored picture's top-left corner ends up on screen: the matrix maps stored (x, y) to shown
# (a x + c y, b x + d y), y pointing down.
ONE = 65536
QUARTER_TURNS = {
    0: ([ONE, 0, 0, 0, ONE, 0, 0, 0, 1 << 30], "top-left"),
    -90: (PORTRAIT_PHONE_MATRIX, "top-right"),
    90: ([0, -ONE, 0, ONE, 0, 0, 0, 0, 1 << 30], "bottom-left"),
    180: ([-ONE, 0, 0, 0, -ONE, 0, 0, 0, 1 << 30], "bottom-right"),
}


@needs_display_matrix
@pytest.mark.parametrize("angle", QUARTER_TURNS)
def test_rotated_video_frames_are_read_upright(tmp_path, angle):
    matrix, corner = QUARTER_TURNS[angle]
    source = open_frames(write_phone_video(tmp_path / "phone.mp4", matrix, [0, 33, 66]))
    frames = list(source)
    shown = (STORED_WIDTH, STORED_HEIGHT, 3) if angle in (90, -90) else (STORED_HEIGHT, STORED_WIDTH, 3)
    assert source.rotation == angle
    assert [f.shape for f in frames] == [shown] * 3
    assert [red_corner(f) for f in frames] == [corner] * 3


@needs_display_matrix
@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv"])
def test_video_writer_keeps_the_rotation_and_the_stored_orientation(tmp_path, suffix):
    source = open_frames(write_phone_video(tmp_path / "phone.mp4", PORTRAIT_PHONE_MATRIX, [0, 33, 66]))
    out = tmp_path / f"out{suffix}"
    with VideoWriter(out, source.frame_rate, rotation=source.rotation) as writer:
        for frame in source:
            writer.write(frame)
    stored, _, rotation = stored_video(out)
    assert rotation == -90  # players turn it as they turn the input
    assert [f.shape for f in stored] == [(STORED_HEIGHT, STORED_WIDTH, 3)] * 3  # stored like the input
    assert [red_corner(f) for f in stored] == ["top-left"] * 3
    assert [red_corner(f) for f in open_frames(out)] == ["top-right"] * 3


def test_avi_has_no_display_matrix_so_rotated_frames_are_stored_upright(tmp_path):
    upright = np.rot90(corner_frame(), -1)  # as the portrait phone video is shown: red top-right
    with VideoWriter(tmp_path / "out.avi", Fraction(30), rotation=-90) as writer:
        writer.write(upright)
    stored, _, rotation = stored_video(tmp_path / "out.avi")
    assert rotation == 0 and stored[0].shape == upright.shape and red_corner(stored[0]) == "top-right"


@pytest.mark.parametrize("container_format", ["mp4", "matroska"])
def test_variable_frame_rate_timestamps_survive_reading_and_writing(tmp_path, container_format):
    path = write_phone_video(tmp_path / "vfr.video", None, VFR_TIMES_MS, container_format)
    source = open_frames(path)
    timed = list(source.timed_frames())  # a matroska header's count (from the average rate) is no truncation
    input_times = [Fraction(pts) * source.time_base for _, pts in timed]
    assert input_times == [Fraction(ms, 1000) for ms in VFR_TIMES_MS]
    assert [int(round(f[..., 1].mean() / 20)) for f, _ in timed] == list(range(len(VFR_TIMES_MS)))

    out = tmp_path / "out.mp4"
    with VideoWriter(out, source.frame_rate, time_base=source.time_base) as writer:
        for frame, pts in timed:
            writer.write(frame, pts)
    _, output_times, _ = stored_video(out)
    assert output_times == input_times


def test_timestamps_are_kept_in_order_and_avi_takes_the_nearest_frame_slot(tmp_path):
    out = tmp_path / "out.mp4"
    with VideoWriter(out, Fraction(10), time_base=Fraction(1, 1000)) as writer:
        for pts in [0, 250, 250, None, 100, 1000]:  # a repeated, a missing and a backwards timestamp
            writer.write(corner_frame(), pts)
    assert stored_video(out)[1] == [0, Fraction(1, 4), Fraction(35, 100), Fraction(45, 100), Fraction(55, 100), 1]

    avi = tmp_path / "out.avi"
    with VideoWriter(avi, Fraction(10), time_base=Fraction(1, 1000)) as writer:
        for pts in [0, 90, 130, 410, 1000]:
            writer.write(corner_frame(), pts)
    assert stored_video(avi)[1] == [0, Fraction(1, 10), Fraction(2, 10), Fraction(4, 10), 1]
    assert len(list(open_frames(avi))) == 5  # the dropped slots are not taken for a truncation


def test_a_frame_rate_override_times_frames_at_that_rate(tmp_path):
    source = open_frames(write_phone_video(tmp_path / "vfr.mp4", None, VFR_TIMES_MS), frame_rate=20)
    assert [Fraction(pts) * source.time_base for _, pts in source.timed_frames()] == [
        Fraction(i, 20) for i in range(len(VFR_TIMES_MS))
    ]


class RedSegmenter:
    """Stands in for ``vidseg.segment.Segmenter``: class 1 where the frame is red, else 0 (the model is not under
    test here, what reaches it and what is written is)."""

    def __init__(self):
        from vidseg.data.labels import get_label_set

        self.label_set = get_label_set("cityscapes")
        self.frames_seen = 0

    def reset(self):
        self.frames_seen = 0

    def segment_frame(self, frame):
        self.frames_seen += 1
        return (frame[..., 0] > 128).astype(np.uint8)


@needs_display_matrix
def test_segment_to_files_segments_a_rotated_vfr_phone_video_upright_and_keeps_its_metadata(tmp_path):
    from vidseg.segment import segment_to_files

    source = open_frames(write_phone_video(tmp_path / "phone.mp4", PORTRAIT_PHONE_MATRIX, VFR_TIMES_MS))
    out, masks = tmp_path / "seg.mp4", tmp_path / "masks"
    summary = segment_to_files(source, RedSegmenter(), out=out, masks=masks, progress=False)
    assert summary.num_frames == len(VFR_TIMES_MS) and summary.size == (STORED_WIDTH, STORED_HEIGHT)

    mask = np.asarray(Image.open(masks / "000000.png"))
    assert mask.shape == (STORED_WIDTH, STORED_HEIGHT)
    assert mask[: STORED_WIDTH // 2, STORED_HEIGHT // 2 :].all() and mask.sum() == mask.size // 4  # top-right

    stored, times, rotation = stored_video(out)
    assert rotation == -90 and stored[0].shape == (STORED_HEIGHT, STORED_WIDTH, 3)
    assert times == [Fraction(ms, 1000) for ms in VFR_TIMES_MS]


@needs_display_matrix
def test_a_rotation_that_is_not_a_quarter_turn_is_refused_naming_the_file(tmp_path):
    # cos 30 and sin 30 degrees in 16.16 fixed point: a picture shown turned by 30 degrees
    matrix = [56756, -32768, 0, 32768, 56756, 0, 0, 0, 1 << 30]
    path = write_phone_video(tmp_path / "tilted.mp4", matrix, [0, 33])
    with pytest.raises(VidsegError, match=f"video {path} is displayed turned by (29|30) degrees.*quarter turns only"):
        open_frames(path)
