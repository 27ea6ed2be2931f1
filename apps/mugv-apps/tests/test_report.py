"""The demo report opens offline in headless Chromium: videos load and tables are filled."""

import functools
import http.server
import threading

from mugv.apps._report import GeneratedVideo, write_demo_report
from mugv.data.video import write_video
from mugv.data.world import SyntheticWorld, WorldConfig

from .conftest import CHROMIUM_ARGS


def _serve(directory):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_report_plays_videos_in_chromium(tmp_path, chromium_path):
    from playwright.sync_api import sync_playwright

    world = SyntheticWorld(WorldConfig(num_frames=17, height=64, width=64))
    videos = []
    for i in range(3):
        sample = world.sample("test", i)
        write_video(tmp_path / "videos" / f"{i}.mp4", sample.clip)
        videos.append(GeneratedVideo(sample.captions[0], f"videos/{i}.mp4", "t2v", {"all": 1.0}))
    write_demo_report(
        tmp_path / "report.html",
        videos=videos,
        accuracy=[{"prompts": "held-out", "colour_shape": 0.9, "motion": 0.75}],
        curves={"dit loss": [(0, 1.0), (50, 0.4), (100, 0.2)]},
        timings={"vae": 1.0, "dit": 2.0},
    )
    page_text = (tmp_path / "report.html").read_text()
    assert "http://" not in page_text and "https://" not in page_text  # nothing from outside
    server = _serve(tmp_path)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{server.server_port}/report.html")
            page.wait_for_function(
                "[...document.querySelectorAll('video')].every(v => v.readyState >= 2 || v.error)",
                timeout=30_000,
            )
            states = page.evaluate(
                "[...document.querySelectorAll('video')].map(v => "
                "({ready: v.readyState, error: v.error && v.error.code, width: v.videoWidth, "
                "duration: v.duration}))"
            )
            cells = page.evaluate("document.querySelectorAll('#accuracy td').length")
            curves = page.evaluate("document.querySelectorAll('#curves svg path').length")
            browser.close()
    finally:
        server.shutdown()
    assert len(states) == 3
    for state in states:
        assert state["error"] is None and state["ready"] >= 2 and state["width"] == 64, state
        assert abs(state["duration"] - 17 / 8) < 0.2, state
    assert cells == 3 and curves == 1
