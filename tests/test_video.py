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
