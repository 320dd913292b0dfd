"""The control page in a real browser: Debian's chromium driven by Playwright against `rtanim webcam --panel`.

Keyboard moves two sliders, and the preview, the status and the written video's measured AUs change; a bad
timeline file shows the CLI's one-line message on the page. Skips, saying why, without a browser.
Set RTANIM_PANEL_SCREENSHOT=docs/panel.png to refresh the README's screenshot; RTANIM_REQUIRE_BROWSER=1
(.ci/run) turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil

import cv2
import numpy as np
import pytest
from panel_http import LiveRun, call, measured_brows

try:
    import starlette  # noqa: F401 - the panel extra
    from playwright import sync_api
except ImportError:
    sync_api = None

CHROMIUM = os.environ.get("RTANIM_CHROMIUM") or next(
    (p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)


def need_browser() -> None:
    """Skip with the reason where no browser is installed; fail instead under RTANIM_REQUIRE_BROWSER=1 (CI)."""
    reason = None
    if sync_api is None:
        reason = "needs Playwright and the panel extra: pip install -e '.[dev]'"
    elif CHROMIUM is None:
        reason = "needs a system chromium for the real-browser test (apt-get install chromium)"
    if reason is not None:
        (pytest.fail if os.environ.get("RTANIM_REQUIRE_BROWSER") == "1" else pytest.skip)(reason)


def preview(base: str) -> np.ndarray:
    r = call(base + "/preview.jpg?w=256")
    assert r.status == 200
    return cv2.imdecode(np.frombuffer(r.body, np.uint8), cv2.IMREAD_COLOR).astype(np.float32)


def test_page_moves_the_face(tmp_path, request):
    need_browser()
    portrait_clip = request.getfixturevalue("portrait_clip")  # made only when the browser is there
    out = tmp_path / "live.mp4"
    with sync_api.sync_playwright() as pw:
        # the browser starts first: the clip plays in real time from the run's first frame
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            run = LiveRun(portrait_clip, out=out).start()
            request.addfinalizer(lambda: run.__exit__(None, None, None))  # ends the run if the test fails
            run.wait(lambda s: s["frames"] >= 3 and s["faces"] == 1, what="frames with the face")
            before = preview(run.base)
            page.goto(run.base + "/")
            page.wait_for_selector("#s-AU01")
            sync_api.expect(page.locator("#status")).to_contain_text("fps", timeout=30_000)
            assert page.locator("#s-AU25").is_disabled()  # passthrough by default on a webcam: follows the face
            bad = b'{"keyframes": [{"t": 0, "aus": {"AU13": 1}}]}'
            page.set_input_files("#timeline-file", files=[{"name": "bad.json", "mimeType": "application/json",
                                                          "buffer": bad}])
            sync_api.expect(page.locator("#message")).to_have_text(
                "POST /timeline: keyframes[0].aus.AU13: unknown AU 'AU13'; did you mean AU12?")
            assert run.status()["panel"]["mode"] == "manual"  # the last good target stays
            for code in ("AU01", "AU02"):  # the keyboard alone: focus, End = the slider's maximum
                page.focus(f"#s-{code}")
                page.keyboard.press("End")
                sync_api.expect(page.locator(f"#s-{code} + output")).to_have_text("1.00")
            s = run.wait(lambda s: s["output"].get("AU01") == 1.0 and s["output"].get("AU02") == 1.0,
                         timeout=60, what="the sliders in the output")
            changed_at = s["frames"]
            run.wait(lambda s: s["frames"] >= changed_at + 2, what="two more frames")
            diff = np.abs(preview(run.base) - before).mean()
            assert diff > 1.0, diff  # the preview shows the raised brows
            page.wait_for_function("document.querySelector('#preview').naturalWidth > 0")
            shot = tmp_path / "panel.png"
            page.evaluate("document.getElementById('message').hidden = true")  # the error above, not for the picture
            page.screenshot(path=str(shot))
            if os.environ.get("RTANIM_PANEL_SCREENSHOT"):
                shutil.copy(shot, os.environ["RTANIM_PANEL_SCREENSHOT"])


            page.click("#record")  # record a slider move, stop, and the page offers the take as a timeline
            sync_api.expect(page.locator("#record")).to_have_attribute("aria-pressed", "true")
            run.wait(lambda s: s["panel"]["recording"], what="recording")
            page.focus("#s-AU12")
            page.keyboard.press("End")
            # the end of the glide, not a frame inside it: the take's last keyframe is the last frame's value
            s = run.wait(lambda s: s["output"].get("AU12", 0) >= 1.0, timeout=60, what="AU12 at 1 in the output")
            run.wait(lambda st: st["frames"] >= s["frames"] + 2, what="two frames at the target")
            page.click("#record")
            sync_api.expect(page.locator("#download")).to_be_visible()
            take = page.evaluate("fetch(document.getElementById('download').href).then(r => r.json())")
            assert take["passthrough"] == ["AU25", "AU26"] and take["keyframes"][-1]["aus"]["AU12"] == 1.0
            live45 = page.locator("#s-AU45").locator("xpath=..").locator(".pass input")
            live45.check()  # hand AU45 back to the face (issue 34): it follows, and its slider rests
            run.wait(lambda s: "AU45L" in s["panel"]["following"], what="AU45 following the face")
            sync_api.expect(page.locator("#s-AU45")).to_be_disabled()
            live45.uncheck()  # and set it again, at the value showing
            run.wait(lambda s: "AU45L" not in s["panel"]["following"], what="AU45 set again")
            sync_api.expect(page.locator("#s-AU45")).to_be_enabled()
            assert not errors, errors
        finally:
            browser.close()
    stats = run.stop()
    brows = measured_brows(out)
    assert len(brows) == stats.frames
    start, end = [b for b in brows[:3] if np.isfinite(b)], [b for b in brows[-3:] if np.isfinite(b)]
    assert start and end and max(start) < 0.4 < 0.6 < min(end), (start, end)
