"""Open a demo report in headless Chromium and check what a reader sees: every image loaded, the video plays.

    python benchmarks/check_report_browser.py runs/demo [--screenshot PATH] [--browser PATH]

Loads ``REPORT_DIR/report.html`` (written by ``vidseg demo``), then checks that every ``<img>`` decoded
(``naturalWidth > 0``) and that every ``<video>`` has data (``readyState >= HAVE_CURRENT_DATA``), starts on
``play()`` and its ``currentTime`` advances by a quarter of a second (or half the video); saves a full-page PNG
screenshot (default ``REPORT_DIR/report_screenshot.png``). Prints the findings as JSON; exits 0 when every check
passes, 1 otherwise, 2 when no Chromium is found or there is no report.

Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``: JSON messages, each
ending in a NUL byte, written to the browser's file descriptor 3 and read from its descriptor 4), so nothing
beyond the standard library is needed. The browser is the first of ``--browser``, ``$VIDSEG_CHROMIUM``,
``chromium``, ``chromium-browser``, ``google-chrome`` found (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WINDOW = (1200, 900)

# Runs in the page once it has loaded; returns what each image and video did.
CHECK_MEDIA = """
(async () => {
  const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));
  const images = [...document.images].map(image => ({
    alt: image.alt, complete: image.complete, naturalWidth: image.naturalWidth, naturalHeight: image.naturalHeight,
  }));
  const videos = [];
  for (const video of document.querySelectorAll("video")) {
    const deadline = Date.now() + 30000;  // generous: a loaded machine decodes slowly
    while (video.readyState < 2 && !video.error && Date.now() < deadline) await sleep(50);
    const readyState = video.readyState;
    video.pause();
    video.loop = false;
    video.currentTime = 0;
    let playError = null;
    try { await video.play(); } catch (error) { playError = String(error); }
    const start = video.currentTime;
    const enough = Math.min(0.25, (video.duration || 1) / 2);  // seconds of playback that show it really plays
    while (video.currentTime < start + enough && !video.ended && !video.error && Date.now() < deadline) {
      await sleep(20);
    }
    videos.push({
      readyState, playError, start, enough, currentTime: video.currentTime, duration: video.duration,
      error: video.error && video.error.message, videoWidth: video.videoWidth, videoHeight: video.videoHeight,
      decodedFrames: video.getVideoPlaybackQuality().totalVideoFrames,
      canPlayH264: video.canPlayType('video/mp4; codecs="avc1.640028"'),
    });
    video.pause();
  }
  return {images, videos};
})()
"""


def find_browser(name: str | None = None) -> str | None:
    """Path of the Chromium to drive: ``name``, else ``$VIDSEG_CHROMIUM``, else the first of ``BROWSERS`` on PATH."""
    for candidate in [name, os.environ.get("VIDSEG_CHROMIUM"), *BROWSERS]:
        if candidate and (path := shutil.which(candidate)):
            return path
    return None


class DevTools:
    """A headless Chromium and a DevTools protocol connection to it over a pipe; use as a context manager."""

    def __init__(self, browser: str, timeout: float = 60.0):
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="vidseg-chromium-")
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self._buffer = b""
        to_browser, self._send_fd = os.pipe()
        self._receive_fd, from_browser = os.pipe()
        flags = [
            "--headless",
            "--remote-debugging-pipe",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
            f"--user-data-dir={self._profile.name}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
        ]
        if os.geteuid() == 0:  # Chromium refuses to run its sandbox as root
            flags.append("--no-sandbox")

        def pipe_to_fds_3_and_4() -> None:
            # Copied above 10 first, so that neither lands on 3 or 4 before both are in place.
            high_in, high_out = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser))
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [browser, *flags, "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            close_fds=False,  # fds 3 and 4 are made in the child; Python's own descriptors are not inheritable
            preexec_fn=pipe_to_fds_3_and_4,
        )
        os.close(to_browser)
        os.close(from_browser)

    def __enter__(self) -> DevTools:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.call("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._send_fd)
        os.close(self._receive_fd)
        self.log.close()
        self._profile.cleanup()

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and return its result (RuntimeError with the browser's message if it failed)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._send_fd, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result
            if "method" in reply:
                self._events.append(reply)

    def wait_for(self, event: str, session: str | None = None) -> dict[str, Any]:
        """The parameters of the next ``event`` (from ``session``), waiting for it if it has not come yet."""
        while True:
            for index, message in enumerate(self._events):
                if message["method"] == event and message.get("sessionId") == session:
                    params: dict[str, Any] = self._events.pop(index)["params"]
                    return params
            message = self._receive()
            if "method" in message:
                self._events.append(message)

    def _receive(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._receive_fd], [], [], left)[0]:
                raise TimeoutError(f"Chromium sent nothing for {self.timeout:.0f} s{self._log_tail()}")
            chunk = os.read(self._receive_fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the DevTools pipe (exit status {self.process.poll()})"
                                   f"{self._log_tail()}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        decoded: dict[str, Any] = json.loads(message)
        return decoded

    def _log_tail(self) -> str:
        self.log.seek(0)
        tail = self.log.read().decode(errors="replace").strip().splitlines()[-5:]
        return ("; its last output:\n" + "\n".join(tail)) if tail else ""


def check_report(report: Path, screenshot: Path, browser: str) -> dict[str, Any]:
    """Load ``report`` (an HTML file) in ``browser``, check its images and videos, save a screenshot.

    Returns the images' and videos' states as the page reports them, and ``problems``: one line per failed check
    (empty when the page is as a reader should see it).
    """
    with DevTools(browser) as devtools:
        target = devtools.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = devtools.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        devtools.call("Page.enable", session=session)
        devtools.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        devtools.call("Page.navigate", {"url": report.resolve().as_uri()}, session=session)
        devtools.wait_for("Page.loadEventFired", session)
        evaluated = devtools.call(
            "Runtime.evaluate", {"expression": CHECK_MEDIA, "awaitPromise": True, "returnByValue": True}, session
        )
        if "exceptionDetails" in evaluated:
            raise RuntimeError(f"the check script failed in the page: {evaluated['exceptionDetails']}")
        found = evaluated["result"]["value"]
        size = devtools.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = devtools.call(
            "Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True}, session
        )
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    return {**found, "screenshot": str(screenshot), "problems": problems(found)}


def problems(found: dict[str, Any]) -> list[str]:
    """One line per check the page failed: no images or no video at all, an image not decoded, a video that
    has no data, fails, or does not advance when played."""
    lines = []
    if not found["images"]:
        lines.append("the page has no images")
    for image in found["images"]:
        if not image["complete"] or image["naturalWidth"] <= 0:
            lines.append(f"image {image['alt']!r} did not load (naturalWidth {image['naturalWidth']})")
    if not found["videos"]:
        lines.append("the page has no video")
    for index, video in enumerate(found["videos"]):
        name = f"video {index}"
        if video["error"] or video["playError"]:
            lines.append(f"{name} failed: {video['error'] or video['playError']} (H.264: {video['canPlayH264']!r})")
        if video["readyState"] < 2 or video["videoWidth"] <= 0:
            lines.append(f"{name} has no picture (readyState {video['readyState']}, width {video['videoWidth']})")
        if not video["currentTime"] >= video["start"] + video["enough"]:
            lines.append(
                f"{name} did not play: currentTime went from {video['start']} to {video['currentTime']} s, "
                f"not {video['enough']} s further"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report_dir", type=Path, help="output folder of `vidseg demo` (holds report.html)")
    parser.add_argument("--screenshot", type=Path, help="PNG to write (default REPORT_DIR/report_screenshot.png)")
    parser.add_argument("--browser", help="Chromium or Chrome executable (default: found on PATH)")
    args = parser.parse_args()
    report = args.report_dir / "report.html"
    if not report.is_file():
        print(f"{report} not found: give the output folder of a finished `vidseg demo`", file=sys.stderr)
        return 2
    browser = find_browser(args.browser)
    if browser is None:
        print(f"no Chromium found (looked for {', '.join(BROWSERS)}); install one, e.g. apt-get install chromium",
              file=sys.stderr)
        return 2
    result = check_report(report, args.screenshot or args.report_dir / "report_screenshot.png", browser)
    print(json.dumps(result, indent=1))
    for line in result["problems"]:
        print(f"FAILED: {line}", file=sys.stderr)
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
