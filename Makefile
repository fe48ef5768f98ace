# make book: install, execute the notebooks with papermill, build the HTML book.
# make test: install, then run the tests and the notebooks (pytest --nbval-lax) on
#   TensorFlow and, beside them, the backend-neutral unit tests and the chapters on
#   JAX and PyTorch.
# make check-book: open the built book in headless Chromium (needs Debian's
#   chromium and chromium-driver); screenshots go to _build/screenshots/.
PYTHON ?= python3
# A pipeline fails when any of its commands fails (the test passes pipe their output).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SRC := _build/book-src
HTML := _build/html

NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

# The book reads the full run's committed record (results/) and, in chapter 3,
# trains a short live run into _build/runs/.
RECORD := $(abspath results/convmixer-256-8)
BOOK_RUN := $(abspath _build/runs/book)
# Paths relative to notebooks/ (papermill's --cwd): the rendered pages show them.
BOOK_03_training := -p DEMO_DIR ../_build/runs/book
BOOK_06_explain := -p EXPORT_DIR ../_build/runs/export

# The tests run every notebook with tiny parameters, from tests/notebooks/ on
# TensorFlow and from tests/notebooks-BACKEND/ on the other backends; each backend's
# notebooks write into run directories of their own (SUFFIX), so that the three
# passes run side by side.
TEST_RUN = $(abspath _build/runs/test$(SUFFIX))
TEST_NOTEBOOKS := tests/notebooks
TEST_03_training = -p DEMO_EPOCHS 1 -p DEMO_TRAIN_SIZE 256 -p EVAL_SIZE 256 \
  -p DEMO_DIR $(TEST_RUN) -p RECORD_DIR $(RECORD)
TEST_04_recipes := -p FAST_DIR $(abspath results/recipes/fast) \
  -p FAST3_DIR $(abspath results/recipes/fast3) -p MEASURE_SIZE 64 \
  -p FIRST_LONG_DIR $(abspath results/recipes/long-keras-randaugment) \
  -p LONG_DIR $(abspath results/recipes/long) \
  -p NO_SHIFTS_DIR $(abspath results/recipes/long-without-shifts) -p RECORD_DIR $(RECORD) \
  -p SMALL_BATCH_DIR $(abspath results/recipes/long-without-shifts-batch-128) \
  -p CONSTANT_DIR $(abspath results/convmixer-256-8-constant) -p EVAL_SIZE 256 \
  -p BN_IMAGES 256
TEST_05_filters := -p RUN_DIR $(RECORD) -p CHANNELS 8
TEST_A1_faster_on_cpu := -p PROFILE $(abspath results/step-profile.json) \
  -p THROUGHPUT $(abspath results/throughput.txt) \
  -p THROUGHPUT_RANDAUGMENT $(abspath results/throughput-randaugment.txt)
TEST_EXPORT = $(abspath _build/runs/test-export$(SUFFIX))
TEST_06_explain = -p RECORD_DIR $(RECORD) -p EVAL_SIZE 256 -p GALLERY 3 \
  -p EXPORT_DIR $(TEST_EXPORT)
TEST_07_ablations := -p ABLATIONS_DIR $(abspath results/ablations) \
  -p FULL_ABLATIONS_DIR $(abspath results/ablations-full)
TEST_08_comparison := -p COMPARISON_DIR $(abspath results/comparison) \
  -p ABLATIONS_DIR $(abspath results/ablations) \
  -p FULL_ABLATIONS_DIR $(abspath results/ablations-full)
TEST_BACKENDS = $(abspath _build/runs/test-backends$(SUFFIX))
TEST_A2_backends = -p RECORD_DIR $(RECORD) -p PREDICT_COUNT 16 -p FILTERS 16 -p DEPTH 1 \
  -p BATCH_SIZE 16 -p STEPS 3 -p START_FILE $(TEST_BACKENDS)/start.keras \
  -p THROUGHPUT $(abspath results/throughput-backends.txt)

# The unit tests of what a user runs on any Keras backend, run again on these,
# and the chapters again on JAX and PyTorch, but the appendix on backends (it
# runs each backend in a process of its own already).
OTHER_BACKENDS := jax torch
# The committed runs' checks, in a pass of their own beside TensorFlow's.
RECORD_TESTS := tests/test_record.py
BACKEND_NOTEBOOKS := 01_data 02_model 03_training 04_recipes 05_filters 06_explain \
  07_ablations 08_comparison A1_faster_on_cpu
BACKEND_TESTS := tests/test_model.py tests/test_data.py tests/test_training.py \
  tests/test_explain.py tests/test_rundir.py tests/test_architectures.py

# $(call papermill,OPTIONS,OUTPUT_DIR,PARAMETER_PREFIX): one papermill command per
# notebook, in order, with the parameters $(PREFIX_<notebook name>).
papermill = $(foreach nb,$(NOTEBOOKS),$(BIN)/papermill $(1) $(nb) $(2)/$(notdir $(nb)) \
  $($(3)_$(basename $(notdir $(nb)))) &&) true

.PHONY: install book test test-tensorflow test-records $(addprefix test-,$(OTHER_BACKENDS)) \
  check-book clean recipe-runs

# Kernels write TensorFlow's C++ start-up log to the terminal, not into the
# notebooks (in Jupyter and Colab it goes to the server's log as well).
export IPYTHONDIR := $(abspath _build/ipython)

install: $(STAMP) $(IPYTHONDIR)/profile_default/ipython_kernel_config.py

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --editable .
	touch $@

# Kernels that run side by side (make test, and the book beside it in CI) keep
# no shared command history.
$(IPYTHONDIR)/profile_default/ipython_kernel_config.py: Makefile
	mkdir -p $(dir $@)
	printf '%s\n' "c.IPKernelApp.capture_fd_output = False" \
	  "c.HistoryManager.enabled = False" > $@

book: install
	rm -rf $(SRC) $(HTML) $(BOOK_RUN) _build/runs/export
	mkdir -p $(SRC)/notebooks
	cp -r _config.yml book $(SRC)/
	$(call papermill,--cwd notebooks,$(SRC)/notebooks,BOOK)
	$(BIN)/python book/collapse_progress.py $(SRC)/notebooks/*.ipynb
	$(BIN)/python book/execution_statistics.py $(SRC)/notebooks/*.ipynb > $(SRC)/book/execution.md
	$(BIN)/jupyter-book build $(SRC) --path-output $(SRC) --toc $(abspath $(SRC))/book/_toc.yml \
	  --warningiserror --keep-going
	mv $(SRC)/_build/html $(HTML)
	@echo "The book: $(HTML)/index.html"

# TensorFlow's pass, the re-evaluation of the committed runs (tests/test_record.py,
# half of TensorFlow's time, all cores busy) and JAX's pass run side by side, then
# PyTorch's; each line of a pass's tests begins with its name.
test: install
	$(MAKE) --no-print-directory --jobs 3 test-tensorflow test-records \
	  $(addprefix test-,$(OTHER_BACKENDS))

# $(call label,BACKEND): a pipe that begins each line with BACKEND.
label = 2>&1 | sed -u 's/^/$(1): /'

test-tensorflow: install
	rm -rf $(TEST_NOTEBOOKS) $(TEST_RUN) $(TEST_EXPORT) $(TEST_BACKENDS)
	mkdir -p $(TEST_NOTEBOOKS)
	$(call papermill,--prepare-only,$(TEST_NOTEBOOKS),TEST)
	$(BIN)/python -m pytest --nbval-lax tests --ignore=$(RECORD_TESTS) $(call label,tensorflow)

test-records: install
	$(BIN)/python -m pytest $(RECORD_TESTS) $(call label,records)

$(addprefix test-,$(OTHER_BACKENDS)): SUFFIX = -$(subst test-,,$@)
$(addprefix test-,$(OTHER_BACKENDS)): test-%: install
	rm -rf $(TEST_NOTEBOOKS)-$* $(TEST_RUN) $(TEST_EXPORT) $(TEST_BACKENDS)
	mkdir -p $(TEST_NOTEBOOKS)-$*
	$(call papermill,--prepare-only,$(TEST_NOTEBOOKS)-$*,TEST)
	KERAS_BACKEND=$* $(BIN)/python -m pytest -q $(BACKEND_TESTS) $(call label,$*)
	KERAS_BACKEND=$* $(BIN)/python -m pytest -q --nbval-lax \
	  $(addprefix $(TEST_NOTEBOOKS)-$*/,$(addsuffix .ipynb,$(BACKEND_NOTEBOOKS))) $(call label,$*)

check-book: $(STAMP)
	$(BIN)/python -m pytest -v tests/test_book_in_browser.py

clean:
	rm -rf _build $(TEST_NOTEBOOKS) $(TEST_NOTEBOOKS)-*

# The runs of results/recipes/ (recipes.recipe_runs): the recipes, the fast one's
# leave-one-out runs, the changes tried on the 3-epoch and long recipes and their
# runs with other seeds; 30-60 minutes per fast run on 2 CPU cores, 2-4 hours per
# long one. Finished runs are skipped, an interrupted one resumes.
recipe-runs: $(STAMP)
	$(BIN)/python -m convmixer_lib.recipes | while read -r name options; do \
	  test -f results/recipes/$$name/metrics.json || $(BIN)/python -m convmixer_lib train \
	    --run-dir results/recipes/$$name $$options < /dev/null || exit 1; done
