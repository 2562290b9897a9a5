# Everything a fresh Debian/Ubuntu machine needs, from the repo: `make demo`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Exactly the releases this project is tested with (pyproject.toml admits them with ranges).
TORCH  := torch==2.14.1 torchvision==0.29.1
# Free disk the first install needs: the venv is 6.2 GB (torch's CUDA build and its nvidia-*
# wheels), pip unpacks beside it. Checked first, so a full disk is one line, not pip's OSError.
NEED_GB := 8

.PHONY: demo test venv data browser bench lint clean

demo: venv data
	$(BIN)/alexnet demo

test: venv data browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(BIN)/python -c 'import torch' 2>/dev/null || [ $$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}') -ge $(NEED_GB) ] || \
	    { echo "make: the first install needs about $(NEED_GB) GB free here; df -h . says $$(df -Ph . | awk 'NR==2 {print $$4}')" >&2; exit 1; }
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
