# Everything a fresh Debian/Ubuntu machine needs, from the repo: `make demo`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Exactly the releases this project is tested with (pyproject.toml admits them with ranges).
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test venv data browser bench lint clean

demo: venv data
	$(BIN)/alexnet demo

test: venv data browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test,onnx,serve,caffe,report,proof]'
	touch $@

# Fashion-MNIST from Debian when we can (root + apt); otherwise a hint, and the demo falls
# back to the synthetic set (clearly labelled).
data:
	@sh scripts/get-debian-packages.sh data

# Debian's Chromium for the browser tests (report page, serving page); never a browser download.
browser:
	@sh scripts/get-debian-packages.sh browser

bench: venv
	$(BIN)/alexnet bench train

# Style check (not part of `make test`): ruff pinned, since its default rule set changes.
lint: venv
	$(BIN)/python -m pip install -q 'ruff==0.17.6'
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
