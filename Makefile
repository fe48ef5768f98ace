# make book: install, execute the notebooks with papermill, build the HTML book.
# make test: install, then run the tests and the notebooks (pytest --nbval-lax).
# make check-book: open the built book in headless Chromium (needs Debian's
#   chromium and chromium-driver); screenshots go to _build/screenshots/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SRC := _build/book-src
HTML := _build/html

# The book is built on a CPU: chapter 3 trains on a subset (see book/intro.md).
BOOK_RUN := $(abspath _build/runs/book)
BOOK_PARAMS_03 := -p EPOCHS 2 -p TRAIN_SIZE 2048 -p RUN_DIR $(BOOK_RUN)
BOOK_PARAMS_04 := -p RUN_DIR $(BOOK_RUN)

# The tests run every notebook with tiny parameters.
TEST_RUN := $(abspath _build/runs/test)
TEST_NOTEBOOKS := tests/notebooks
TEST_PARAMS_03 := -p EPOCHS 1 -p TRAIN_SIZE 256 -p EVAL_SIZE 256 -p RUN_DIR $(TEST_RUN)
TEST_PARAMS_04 := -p RUN_DIR $(TEST_RUN) -p CHANNELS 8

.PHONY: install book test check-book clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --editable .
	touch $@

# Kernels write TensorFlow's C++ start-up log to the terminal, not into the
# notebooks (in Jupyter and Colab it goes to the server's log as well).
export IPYTHONDIR := $(abspath _build/ipython)

$(IPYTHONDIR)/profile_default/ipython_kernel_config.py:
	mkdir -p $(dir $@)
	echo "c.IPKernelApp.capture_fd_output = False" > $@

book: $(STAMP) $(IPYTHONDIR)/profile_default/ipython_kernel_config.py
	rm -rf $(SRC) $(HTML) $(BOOK_RUN)
	mkdir -p $(SRC)/notebooks
	cp -r _config.yml book $(SRC)/
	for nb in notebooks/0*.ipynb; do \
	  name=$$(basename $$nb .ipynb); \
	  case $$name in 03_*) params="$(BOOK_PARAMS_03)";; 04_*) params="$(BOOK_PARAMS_04)";; *) params="";; esac; \
	  $(BIN)/papermill --cwd notebooks $$nb $(SRC)/$$nb $$params || exit 1; \
	done
	$(BIN)/python book/collapse_progress.py $(SRC)/notebooks/*.ipynb
	$(BIN)/jupyter-book build $(SRC) --path-output $(SRC) --toc $(abspath $(SRC))/book/_toc.yml \
	  --warningiserror --keep-going
	mv $(SRC)/_build/html $(HTML)
	@echo "The book: $(HTML)/index.html"

test: $(STAMP) $(IPYTHONDIR)/profile_default/ipython_kernel_config.py
	rm -rf $(TEST_NOTEBOOKS) $(TEST_RUN)
	mkdir -p $(TEST_NOTEBOOKS)
	for nb in notebooks/0*.ipynb; do \
	  name=$$(basename $$nb .ipynb); \
	  case $$name in 03_*) params="$(TEST_PARAMS_03)";; 04_*) params="$(TEST_PARAMS_04)";; *) params="";; esac; \
	  $(BIN)/papermill --prepare-only $$nb $(TEST_NOTEBOOKS)/$$name.ipynb $$params || exit 1; \
	done
	$(BIN)/python -m pytest --nbval-lax tests

check-book: $(STAMP)
	$(BIN)/python -m pytest -v tests/test_book_in_browser.py

clean:
	rm -rf _build $(TEST_NOTEBOOKS)
