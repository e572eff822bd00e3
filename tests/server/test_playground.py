"""The playground page in a real browser (headless Chromium driven by selenium) against `ingot serve` with a tiny
language model and a tiny detector behind an API key: the key is asked for and kept out of URLs, a chat answer
streams in with its numbers, stop aborts it on the server, and a detection is drawn and filtered in the page.
The README's screenshots of the demo model are taken by docs/playground_screenshots.py the same way."""

from __future__ import annotations

import colorsys
import json
import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from starlette.testclient import TestClient

from ingot.benchmark.launch import free_port, healthy
from ingot.compile.verify.sample_inputs import synthetic_scene
from ingot.server.app import create_app
from ingot.server.settings import ServerSettings
from tests.server.helpers import eventually
from tests.server.test_structured_outputs import ALARM

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from docs.playground_screenshots import CHROMIUM_MISSING, headless_chromium

KEY = "playground-test-key"
LLM, DETECTOR = "tiny-llama", "yolov4"


@pytest.fixture(scope="module")
def url(compiled, compiled_yolo, tmp_path_factory) -> Iterator[str]:
    """`ingot serve` as a user starts it: both artifacts, named, behind an API key."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "ingot.cli", "serve", str(compiled("llama").path), str(compiled_yolo(320).path),
        "--served-model-name", LLM, "--served-model-name", DETECTOR, "--api-key", KEY, "--port", str(port),
        "--kv-cache-gb", "0.05", "--cache-dir", str(tmp_path_factory.mktemp("serve-cache")),
    ]  # fmt: skip
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        # Loading and warming up both models takes seconds alone and minutes on a loaded 2-core machine.
        eventually(lambda: healthy(url) or process.poll() is not None, timeout=1200)
        assert healthy(url), f"ingot serve did not turn healthy:\n{log.read_text()[-3000:]}"
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def browser():
    browser = headless_chromium("1360,860")
    if browser is None:
        pytest.skip(CHROMIUM_MISSING)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def page(browser, url):
    """The page, opened as a user would: it asks for the key, which is typed into its dialog."""
    browser.get(f"{url}/")
    wait(browser).until(lambda b: b.find_element(By.ID, "key-dialog").get_attribute("open") is not None)
    browser.find_element(By.ID, "api-key").send_keys(KEY + "\n")
    wait(browser).until(lambda b: len(Select(b.find_element(By.ID, "model")).options) == 2)
    return browser


def wait(browser, timeout: float = 60) -> WebDriverWait:
    """Polled often, so that the stop test clicks soon after the first token; the status panel's rows are
    replaced every refresh, so one read mid-refresh is retried."""
    return WebDriverWait(browser, timeout, poll_frequency=0.02, ignored_exceptions=(StaleElementReferenceException,))


def metric(url: str, name: str, **labels: str) -> float:
    labels = {"model_name": LLM, **labels}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


def choose(page, model: str) -> None:
    Select(page.find_element(By.ID, "model")).select_by_value(model)


def set_field(page, element_id: str, value: str) -> None:
    """A field of the chat settings, which are opened first if they are folded."""
    if page.find_element(By.ID, "chat-settings").get_attribute("open") is None:
        page.find_element(By.CSS_SELECTOR, "#chat-settings summary").click()
    field = page.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(value)


def test_the_api_needs_the_key_the_page_does_not_and_the_key_stays_out_of_urls(page, url):
    assert httpx.get(f"{url}/v1/models").status_code == 401
    assert httpx.post(f"{url}/v1/chat/completions", json={"messages": []}).status_code == 401
    for path in ("/", "/playground", "/playground/main.js"):
        assert httpx.get(f"{url}{path}").status_code == 200, path
    assert "default-src 'self'" in httpx.get(url).headers["content-security-policy"]  # nothing from elsewhere
    assert [o.get_attribute("value") for o in Select(page.find_element(By.ID, "model")).options] == [LLM, DETECTOR]
    assert KEY not in page.current_url and page.current_url == f"{url}/"


def test_a_chat_answer_streams_in_with_its_numbers(page, url):
    choose(page, LLM)
    set_field(page, "system-prompt", "You are a helpful assistant.")
    set_field(page, "temperature", "0")
    set_field(page, "max-tokens", "24")
    # Count the transcript's changes: the two messages, their stats, and the answer growing once per chunk.
    page.execute_script(
        "window.pieces = 0; new MutationObserver((records) => { window.pieces += records.length; })"
        ".observe(document.getElementById('transcript'), {childList: true, subtree: true, characterData: true});"
    )
    page.find_element(By.ID, "prompt").send_keys("Tell me about compilers.\n")
    stats = wait(page).until(lambda b: b.find_element(By.CSS_SELECTOR, ".message.assistant .stats").text)
    match = re.fullmatch(r"TTFT \d+ ms · ([\d.]+) tokens/s · (\d+) tokens · finish: (length|stop)", stats)
    assert match, stats
    assert float(match[1]) > 0 and 0 < int(match[2]) <= 24
    assert page.find_element(By.CSS_SELECTOR, ".message.assistant .content").text
    assert page.execute_script("return window.pieces") > 3 + 1


def test_stop_aborts_the_answer_on_the_server(page, url):
    choose(page, LLM)
    page.find_element(By.ID, "clear").click()
    set_field(page, "temperature", "0")
    set_field(page, "max-tokens", "160")  # with the system prompt and the question, the context's 256 tokens
    aborted = metric(url, "vllm:request_success_total", finished_reason="abort")
    # A tiny model can finish 160 tokens faster than a round trip from here: the page clicks Stop itself the moment
    # the first words appear, as a user watching it would.
    page.execute_script("""
        new MutationObserver((records, observer) => {
            if (document.querySelector(".message.assistant .content")?.textContent) {
                observer.disconnect();
                document.getElementById("stop").click();
            }
        }).observe(document.getElementById("transcript"), {childList: true, subtree: true, characterData: true});
    """)
    page.find_element(By.ID, "prompt").send_keys("Count to a thousand.\n")
    stats = wait(page).until(lambda b: b.find_element(By.CSS_SELECTOR, ".message.assistant .stats").text)
    assert stats.endswith("finish: stopped"), stats
    assert eventually(lambda: metric(url, "vllm:num_requests_running") == 0, timeout=30)
    assert metric(url, "vllm:request_success_total", finished_reason="abort") == aborted + 1
    assert page.find_element(By.ID, "send").is_enabled() and not page.find_element(By.ID, "stop").is_enabled()


def test_a_json_schema_constrains_the_answer(page):
    """A boolean alone: under this schema even a random-weight model's answer ends by itself, within a few tokens."""
    choose(page, LLM)
    page.find_element(By.ID, "clear").click()
    set_field(page, "max-tokens", "40")
    set_field(page, "json-schema", json.dumps(ALARM))
    try:
        page.find_element(By.ID, "prompt").send_keys("Should the alarm be on?\n")
        stats = wait(page).until(lambda b: b.find_element(By.CSS_SELECTOR, ".message.assistant .stats").text)
        assert stats.endswith("finish: stop"), stats
        answer = page.find_element(By.CSS_SELECTOR, ".message.assistant .content").text
        assert json.loads(answer) in ({"on": True}, {"on": False}), answer
    finally:
        set_field(page, "json-schema", "")


def test_a_detection_is_drawn_and_the_threshold_filters_it_in_the_page(page, url, tmp_path):
    choose(page, DETECTOR)
    image = tmp_path / "scene.jpg"
    synthetic_scene(700, 500, seed=11).save(image)
    answer = httpx.post(
        f"{url}/v1/detections", headers={"Authorization": f"Bearer {KEY}"}, timeout=120,
        files={"image": ("scene.jpg", image.read_bytes(), "image/jpeg")}, data={"confidence_threshold": "0.05"},
    ).json()  # fmt: skip
    # The page asks as this did, at the slider's minimum, and filters that one answer (random weights may give every
    # box the same saturated score, so the counts per threshold come from the answer rather than being fixed here).
    scores = [d["score"] for d in answer["detections"]]

    def shown_at(threshold: float) -> str:
        return str(sum(score >= threshold for score in scores))

    assert shown_at(0.25) != "0"
    requests = metric(url, "ingot:detection_requests_total", model_name=DETECTOR, status="ok")
    page.find_element(By.ID, "image-input").send_keys(str(image))
    canvas = page.find_element(By.ID, "detection-canvas")
    wait(page, 120).until(lambda b: canvas.get_attribute("data-boxes") is not None)
    assert canvas.get_attribute("data-boxes") == shown_at(0.25)  # the slider starts at 0.25
    assert (canvas.get_attribute("width"), canvas.get_attribute("height")) == ("700", "500")
    # A shown box's left edge is drawn over the image in a box colour (a later box may cross it).
    shown = [d for d in answer["detections"] if d["score"] >= 0.25]
    x1, y1, _, y2 = shown[0]["box"]
    pixel = page.execute_script(
        "return Array.from(arguments[0].getContext('2d').getImageData(arguments[1], arguments[2], 1, 1).data)",
        canvas, int(x1), int((y1 + y2) / 2),
    )[:3]  # fmt: skip
    assert any(all(abs(a - b) <= 2 for a, b in zip(pixel, box_colour(d["class_id"]))) for d in shown)
    for threshold in (0.05, 0.5, 0.9, max(scores) + 0.01, 1, 0.25):
        slide_to(page, f"{min(threshold, 1):.2f}")
        value = float(page.find_element(By.ID, "threshold").get_attribute("value"))
        assert canvas.get_attribute("data-boxes") == shown_at(value), threshold
    assert metric(url, "ingot:detection_requests_total", model_name=DETECTOR, status="ok") == requests + 1


def box_colour(class_id: int) -> tuple[int, ...]:
    """The page's hsl((class_id * 47) % 360, 90%, 45%) in RGB."""
    return tuple(round(255 * c) for c in colorsys.hls_to_rgb((class_id * 47 % 360) / 360, 0.45, 0.9))


def slide_to(page, value: str) -> None:
    page.execute_script(
        "const s = document.getElementById('threshold'); s.value = arguments[0]; s.dispatchEvent(new Event('input'));",
        value,
    )


def test_the_status_panel_shows_the_engine_and_what_each_model_is(page, url):
    cards = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()["data"]

    def rows(table: str) -> list[list[str]]:
        cells = page.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")
        return [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in cells]

    wait(page).until(lambda b: rows("engine-status")[:1] and rows("engine-status")[0][:3] == [LLM, "0", "0"])
    expected = [[c["id"], c["metadata"]["artifact"][:12], "cpu", c["metadata"]["weight_format"] or "–"] for c in cards]
    assert rows("model-status") == expected
    assert expected[0][3] == "fp32" and expected[1][3] == "–"


def test_no_playground_leaves_only_the_api(detector):
    for enabled, status in ((True, 200), (False, 404)):
        app = create_app({}, ServerSettings(playground=enabled), {DETECTOR: detector})
        client = TestClient(app)  # no lifespan: nothing warms up, nothing is served but these files
        for path in ("/", "/playground", "/playground/main.js"):
            assert client.get(path).status_code == status, (enabled, path)
