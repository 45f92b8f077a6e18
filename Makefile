# napari-unet-loop: the two commands of the README, each installing what it needs into .venv.
#   make demo   napari with the plugin docked on a sample image
#   make test   lint, manifest check and the whole test suite (GUI tests under Xvfb when there is no display)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0: a CPU build on our machines; pinned here so pip does not pull a multi-GB CUDA build
TORCH ?= torch==2.13.0

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
	$(BIN)/npe2 validate napari-unet-loop --imports
	@if [ -z "$$DISPLAY" ] && command -v xvfb-run >/dev/null 2>&1; then \
		echo "no display: running the tests under xvfb-run"; \
		xvfb-run -a -s "-screen 0 1600x1000x24" $(BIN)/python -m pytest $(PYTEST_ARGS); \
	else \
		$(BIN)/python -m pytest $(PYTEST_ARGS); \
	fi

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
