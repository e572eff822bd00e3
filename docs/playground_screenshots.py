"""Take the README's playground screenshots (docs/playground-chat.png, docs/playground-detection.png): headless
Chromium, driven by selenium, uses the page of `ingot serve` with the demo model and YOLOv4 as a user would.

    make playground-screenshots    # or: python docs/playground_screenshots.py [--cache-dir DIR]

`ingot serve yolov4` serves the newest YOLOv4 artifact in the cache. No trained YOLOv4 weights ship with ingot, so
the make target compiles one with random weights first; its boxes on the synthetic scene are noise. The demo model
compiles on a cache miss (about 5 minutes on 2 cores). Needs Debian's chromium and chromium-driver.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from ingot.benchmark.launch import ServerFailed, free_port, running
from ingot.compile.verify.sample_inputs import synthetic_scene

DOCS = Path(__file__).resolve().parent
LLM, DETECTOR = "smollm2-135m", "yolov4"
SYSTEM_PROMPT = "You are a helpful assistant. Answer briefly."
PROMPT = "What does a compiler do?"
START_TIMEOUT_S = 1800  # the demo model compiles on a cache miss
ANSWER_TIMEOUT_S = 300
CHROMIUM_MISSING = "Debian's chromium and chromium-driver are missing: `make install-test` installs them with apt-get"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=LLM, help=f"the language model to chat with (default {LLM})")
    parser.add_argument("--detector", default=DETECTOR, help=f"the detector (default {DETECTOR}: its newest artifact)")
    parser.add_argument("--cache-dir", help="artifact cache (default $INGOT_CACHE_DIR or the user cache dir)")
    parser.add_argument("--out-dir", type=Path, default=DOCS, help="where the PNGs go (default docs/)")
    args = parser.parse_args()
    with serving(args) as url, chromium() as browser, tempfile.TemporaryDirectory() as scratch:
        browser.get(f"{url}/")
        wait(browser).until(lambda b: len(Select(b.find_element(By.ID, "model")).options) == 2)
        chat(browser)
        browser.save_screenshot(str(args.out_dir / "playground-chat.png"))
        image = Path(scratch) / "scene.jpg"
        synthetic_scene(700, 500, seed=11).save(image)
        detect(browser, image)
        browser.save_screenshot(str(args.out_dir / "playground-detection.png"))
    print(f"wrote {args.out_dir / 'playground-chat.png'} and {args.out_dir / 'playground-detection.png'}")


@contextmanager
def serving(args: argparse.Namespace) -> Iterator[str]:
    """`ingot serve` of both models on a free port of 127.0.0.1 (its log is shown if it does not turn healthy)."""
    port = free_port()
    command = [
        sys.executable, "-m", "ingot.cli", "serve", args.model, args.detector, "--port", str(port),
        "--served-model-name", LLM, "--served-model-name", DETECTOR,
    ]  # fmt: skip
    if args.cache_dir:
        command += ["--cache-dir", args.cache_dir]
    try:
        with running(command, port, timeout=START_TIMEOUT_S):
            yield f"http://127.0.0.1:{port}"
    except ServerFailed as error:  # its log's last lines are on stderr already
        sys.exit(f"ingot serve did not turn healthy: {error}")


def headless_chromium(window_size: str) -> webdriver.Chrome | None:
    """Debian's Chromium, headless, driven by its chromedriver (tests/server/test_playground.py drives the page with
    it too); None where the two are not installed."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        return None
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={window_size}"):
        options.add_argument(argument)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=options)


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    browser = headless_chromium("1360,900")
    if browser is None:
        sys.exit(CHROMIUM_MISSING)
    try:
        yield browser
    finally:
        browser.quit()


def wait(browser: webdriver.Chrome, timeout: float = 60) -> WebDriverWait:
    return WebDriverWait(browser, timeout, poll_frequency=0.2)


def chat(browser: webdriver.Chrome) -> None:
    """One question with the settings shown, answered greedily so that the screenshot is the same every time."""
    Select(browser.find_element(By.ID, "model")).select_by_value(LLM)
    browser.find_element(By.CSS_SELECTOR, "#chat-settings summary").click()
    for field, value in (("system-prompt", SYSTEM_PROMPT), ("temperature", "0"), ("max-tokens", "96")):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    browser.find_element(By.ID, "prompt").send_keys(PROMPT + "\n")
    wait(browser, ANSWER_TIMEOUT_S).until(lambda b: b.find_element(By.CSS_SELECTOR, ".message.assistant .stats").text)
    time.sleep(3)  # the server panel refreshes every 2 s: let it show this answer's prefix-cache numbers


def detect(browser: webdriver.Chrome, image: Path) -> None:
    Select(browser.find_element(By.ID, "model")).select_by_value(DETECTOR)
    browser.find_element(By.ID, "image-input").send_keys(str(image))
    canvas = browser.find_element(By.ID, "detection-canvas")
    wait(browser, ANSWER_TIMEOUT_S).until(lambda b: canvas.get_attribute("data-boxes") is not None)


if __name__ == "__main__":
    main()
