# napari-unet-loop: the two commands of the README, each installing what it needs into .venv.
#   make demo   napari with the plugin docked on a sample image
#   make test   lint, import contracts, manifest check and the whole test suite (GUI tests under Xvfb without a display)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0: a CPU build on our machines; pinned here so pip does not pull a multi-GB CUDA build
TORCH ?= torch==2.13.0

NO_DISPLAY := no display and no xvfb-run: only the tests that need no napari window ran (those marked gui were \
left out). To run them all, install a virtual display (Debian/Ubuntu: sudo apt-get install xvfb) and run make test again.

.PHONY: demo test install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[all,test]"
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/napari-unet-loop gui --sample nuclei_fluorescence

test: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/npe2 validate napari-unet-loop --imports
	@if [ -n "$$DISPLAY" ]; then \
		$(BIN)/python -m pytest $(PYTEST_ARGS); \
	elif command -v xvfb-run >/dev/null 2>&1; then \
		echo "no display: running the tests under xvfb-run"; \
		xvfb-run -a -s "-screen 0 1600x1000x24" $(BIN)/python -m pytest $(PYTEST_ARGS); \
	else \
		echo "$(NO_DISPLAY)"; \
		$(BIN)/python -m pytest -m "not gui" $(PYTEST_ARGS); status=$$?; \
		echo "$(NO_DISPLAY)"; exit $$status; \
	fi

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
