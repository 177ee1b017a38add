"""The station page's screenshots in docs/, made from a real run: `python -m leukedge.screenshots --out docs/`.

A small bundle, a synthetic microscope video and a real Mosquitto on 127.0.0.1; the agent as
its own process; a sample driven through Start, Set id and End in headless Chromium (Debian's
chromium + chromium-driver through selenium: nothing is downloaded). Writes
station-touchscreen.png (the Pi's 800x480 screen, a sample open), station-touchscreen-result.png
(800x480, the slide just closed), station-phone.png (390x844) and station.png (1280x800).
By default it takes about a minute, most of it training a small two-epoch model (unsure of
everything, so its slides show as refer; its bundle has no unfamiliar-input guard, which would
rightly refer the synthetic fields as unlike its training slides). The pictures in docs/ come
from the demo's trained model and video, as a technician would see them:
`make demo`, then `python -m leukedge.screenshots --bundle demo-out/bundles/custom_cnn
--video demo-out/microscope.mp4`.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SAMPLE_ID = "H 2024/00417"  # an accession number as labs print them: a space and a slash


def chromium(width: int = 800, height: int = 480):
    """Headless Chromium with a width x height CSS px viewport (the Pi's touchscreen by default)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--hide-scrollbars",
                "--window-size=1280,2000", "--no-first-run", "--disable-extensions"):  # the largest it may grow to
        opts.add_argument(arg)
    # an explicit driver path: selenium-manager never runs, nothing is fetched
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.implicitly_wait(0)
    viewport(driver, width, height)
    return driver


def viewport(driver, width: int, height: int) -> None:
    """Resize the window so that the page itself (not the window) is width x height."""
    frame = driver.execute_script("return window.outerHeight - window.innerHeight")
    driver.set_window_size(width, height + frame)
    driver.execute_script("window.scrollTo(0, 0)")


def text(driver, element_id: str) -> str:
    """An element's visible text in one script call (the page re-renders every snapshot)."""
    return driver.execute_script("const e = document.getElementById(arguments[0]); return e ? e.innerText : '';",
                                 element_id)


def until(driver, predicate, timeout: float, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: predicate(d), what)


def shoot(driver, path: Path, width: int, height: int) -> Path:
    viewport(driver, width, height)
    time.sleep(0.8)  # a snapshot or two at the new size
    if not driver.save_screenshot(str(path)):
        raise RuntimeError(f"no screenshot written to {path}")
    return path


def drive(driver, url: str, out: Path) -> list[Path]:
    """Start a sample by a typed id, rename it with Set id, let it pool enough fields, End it."""
    driver.get(url)
    until(driver, lambda d: text(d, "field-meta"), 90, "no field on the page")
    box = driver.find_element("id", "sample-input")
    box.send_keys("SLIDE-1")
    driver.find_element("id", "btn-start").click()
    until(driver, lambda d: text(d, "sample-id") == "SLIDE-1", 15, "Start sample did not open SLIDE-1")
    box.send_keys("  " + SAMPLE_ID + " ")
    driver.find_element("id", "btn-id").click()
    until(driver, lambda d: text(d, "sample-id") == SAMPLE_ID, 15, "Set id did not name the sample")
    until(driver, lambda d: _enough(text(d, "sample-fields")), 120, "too few fields pooled for a slide decision")
    shots = [shoot(driver, out / "station-touchscreen.png", 800, 480),
             shoot(driver, out / "station-phone.png", 390, 844)]
    viewport(driver, 800, 480)
    driver.find_element("id", "btn-end").click()
    until(driver, lambda d: text(d, "closed-id") == SAMPLE_ID and text(d, "closed-h").lower() == "slide result", 15,
          "the closed slide is not shown")
    shots += [shoot(driver, out / "station-touchscreen-result.png", 800, 480),
              shoot(driver, out / "station.png", 1280, 800)]
    return shots


def _enough(fields: str) -> bool:
    """'7 fields since 10:02:11, 5 needed': the fields a slide decision needs, and one more."""
    m = re.match(r"(\d+) fields? since .*, (\d+) needed", fields)
    return bool(m) and int(m.group(1)) > int(m.group(2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m leukedge.screenshots", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs"), help="folder for the PNGs (default docs/)")
    ap.add_argument("--bundle", type=Path, help="bundle to run (default: a small one trained here)")
    ap.add_argument("--video", type=Path, help="microscope video to play (default: a synthetic one made here)")
    args = ap.parse_args(argv)
    for given, need, what in ((args.bundle, "manifest.json", "a bundle folder (manifest.json)"), (args.video, "", "a video file")):
        if given is not None and not (given / need if need else given).is_file():
            print(f"screenshots: {given} is not {what}", file=sys.stderr)
            return 2
    from leukedge.localbroker import Broker, mosquitto_available

    missing = [name for name, ok in (("chromium", Path(CHROMIUM).exists()), ("chromedriver", Path(CHROMEDRIVER).exists()),
                                     ("mosquitto", mosquitto_available())) if not ok]
    if missing:
        print(f"screenshots: needs {', '.join(missing)} (Debian: apt-get install chromium chromium-driver mosquitto)",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    from leukedge.agent_process import AgentProcess, agent_config
    from leukedge.bundle_factory import make_small_bundle
    from trainer.synth.video import write_video

    with tempfile.TemporaryDirectory(prefix="leukedge-shots-") as tmp:
        work = Path(tmp)
        bundle = args.bundle or make_small_bundle(work / "bundle", guard=False)
        video = args.video
        if video is None:
            video = work / "smear.mp4"
            write_video(video, n_fields=8, size=320, seed=3, fps=15)
        with Broker(work / "broker") as broker:
            cfg = agent_config(work / "agent", bundle, video, broker.url, device_id="scope-01", gate={"mode": "still"},
                               source={"fps": 15.0}, sample={"fields_per_sample": 0}, ui={"listen": "127.0.0.1:0"})
            agent = AgentProcess(work / "agent", cfg).start()
            driver = None
            try:
                driver = chromium()
                shots = drive(driver, agent.page_url(), args.out)
            finally:
                if driver is not None:
                    driver.quit()
                agent.terminate()
    for path in shots:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
