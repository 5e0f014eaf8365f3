# cleancodec — one variable contract for every stage:
#   CONF=conf/<profile>.yaml   configuration profile (each target has its own default)
#   CODEC=random               random-init DAC-16k (offline pipeline checks; audio meaningless)
#   CODEC=/path/weights.pth    DAC weights in DAC's release format
#   ARGS="section.key=value …" any config key, e.g. ARGS="train.steps=500 train.optim.lr_g=2e-4"
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/cleancodec

CONF ?=
CODEC ?=
CLEAN ?=
NOISE ?=
RIR ?=
OUT ?= data/cache
CACHE ?= data/cache
RUN ?=
INPUT ?=
OUTPUT ?=
OUTPUT_SR ?=
BYPASS ?=
MIX ?=
ENHANCED ?=
NOISY ?=
EVAL_OUT ?=
CHECKPOINT ?=
CKPT ?=
HOST ?=
PORT ?=
PYTEST_ARGS ?=
TEST_WORKERS ?= auto
ARGS ?=
BENCH ?= cache train denoise
DEMO ?= data/demo

codec_opt = $(if $(CODEC),--codec $(CODEC))
conf_or = $(if $(CONF),$(CONF),$(1))

.PHONY: install demo-data cache train import-seed denoise evaluate serve demo test test-fast lint bench clean help

help:
	@echo "make install | demo-data | cache | train | denoise INPUT=dir | evaluate | serve | demo | test | lint | bench | clean"
	@echo "any stage: ARGS='section.key=value ...' overrides config keys (cleancodec config shows them)"

install:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade "pip>=23"
	$(VENV)/bin/pip install torch==2.13.0
	# dac and audiotools without their torchaudio requirement (see cleancodec/core/codec.py)
	$(VENV)/bin/pip install --no-deps descript-audio-codec==1.0.0 descript-audiotools==0.7.2
	$(VENV)/bin/pip install -e '.[dev,serve,browser]'
	$(PY) -c "import cleancodec.core.codec as c; c.import_dac(); print('cleancodec installed; dac imports fine')"

# demo corpus (real speech + noise from Debian packages): DEMO=dir to build it elsewhere
demo-data:
	$(CLI) demo data --conf $(call conf_or,conf/demo_data.yaml) --out $(DEMO) $(ARGS)

# cache: CLEAN, NOISE, RIR (default: the profile's folders, data/demo), OUT (default data/cache),
# optional WORKERS=N, OVERWRITE=1. Rerunning resumes an interrupted build.
# Premixed pairs: CLEAN=dir NOISY=dir instead of NOISE (NOISY is the noisy side of clean/noisy
# pairs, as for `make evaluate`; paired by relative path, file name or DNS fileid_N).
cache:
	$(CLI) cache --conf $(call conf_or,conf/cache.yaml) $(codec_opt) \
		$(if $(CLEAN),--clean $(CLEAN)) $(if $(NOISE),--noise $(NOISE)) \
		$(if $(NOISY),--noisy $(NOISY)) $(if $(RIR),--rir $(RIR)) --out $(OUT) \
		$(if $(WORKERS),--workers $(WORKERS)) $(if $(OVERWRITE),--overwrite) $(ARGS)

# train: CACHE (default data/cache), RUN (default runs/<name>), CONF (default conf/train.yaml),
# optional PRESET=medium|large|seed-medium|seed-large, STEPS=N, RESTART=1, WATCH=testset-dir (scores every best /
# milestone checkpoint with audio metrics in a separate process; CODEC= is the watcher's codec).
# Rerunning resumes from $(RUN)/latest.pt.
train:
	$(CLI) train --conf $(call conf_or,conf/train.yaml) --cache $(CACHE) \
		$(if $(RUN),--run $(RUN)) $(if $(PRESET),--preset $(PRESET)) \
		$(if $(STEPS),--steps $(STEPS)) $(if $(RESTART),--restart) \
		$(if $(WATCH),--watch $(WATCH) $(if $(CODEC),--watch-codec $(CODEC))) $(ARGS)

# import-seed: CKPT=seed checkpoint (.tar of the seed research code), RUN (default runs/seed),
# CODEC (default: DAC's pretrained weights, which the seed trained on). Prints the fine-tune command.
import-seed:
	@test -n "$(CKPT)" || { echo "usage: make import-seed CKPT=file.tar [RUN=runs/seed]" >&2; exit 2; }
	$(CLI) import-seed "$(CKPT)" $(or $(RUN),runs/seed) $(codec_opt)

# denoise: INPUT=file|dir (required), OUTPUT (default <INPUT>_denoised beside it), CHECKPOINT
# (default: the newest best.pt under runs/ for that codec), CONF (default conf/denoise.yaml),
# CODEC, BYPASS=1 (codec alone), MIX=0..1 (dry input blended back), OUTPUT_SR=16000 (keep 16 kHz).
denoise:
	@test -n "$(INPUT)" || { echo "usage: make denoise INPUT=file|dir [OUTPUT=path]" \
		"[CHECKPOINT=runs/<name>/best.pt] [CONF=...] [CODEC=random|PATH] [BYPASS=1] [MIX=0.2]" >&2; exit 2; }
	$(CLI) denoise "$(INPUT)" $(if $(OUTPUT),"$(OUTPUT)") --conf $(call conf_or,conf/denoise.yaml) \
		$(codec_opt) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) $(if $(BYPASS),--bypass) \
		$(if $(MIX),--mix $(MIX)) $(if $(OUTPUT_SR),--output-sr $(OUTPUT_SR)) $(ARGS)

# evaluate: ENHANCED=dir (required), CLEAN=dir (omit: reference-free DNSMOS only), NOISY=dir
# (scored as the baseline), EVAL_OUT (default <ENHANCED>_eval), CONF (default conf/denoise.yaml).
evaluate:
	@test -n "$(ENHANCED)" || { echo "usage: make evaluate ENHANCED=dir [CLEAN=dir] [NOISY=dir]" \
		"[EVAL_OUT=dir]" >&2; exit 2; }
	$(CLI) evaluate --enhanced "$(ENHANCED)" $(if $(CLEAN),--clean "$(CLEAN)") \
		$(if $(NOISY),--noisy "$(NOISY)") --out "$(or $(EVAL_OUT),$(patsubst %/,%,$(ENHANCED))_eval)" \
		--conf $(call conf_or,conf/denoise.yaml) $(ARGS)

# serve: the browser app to denoise and compare by ear (http://127.0.0.1:7860; HOST=0.0.0.0 to
# listen on every address, PORT); CHECKPOINT (default: the newest best.pt under runs/ for that
# codec; the page lists every run's), CONF (default conf/denoise.yaml), CODEC.
serve:
	$(CLI) serve --conf $(call conf_or,conf/denoise.yaml) $(codec_opt) \
		$(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) $(if $(HOST),--host $(HOST)) \
		$(if $(PORT),--port $(PORT)) $(ARGS)

# demo: demo corpus → small cache → short training (medium) → denoise a test-set excerpt →
# evaluate. Needs DAC weights; CODEC=random runs the same chain as a pipeline check. Outputs go
# to runs/demo_<dac|random|custom>/ (cache: data/demo_cache_<...>), so codecs never mix.
demo_tag = $(if $(CODEC),$(if $(filter random,$(CODEC)),random,custom),dac)
DEMO_WORK ?= runs/demo_$(demo_tag)
DEMO_CACHE ?= data/demo_cache_$(demo_tag)
demo_conf = $(call conf_or,conf/demo.yaml)

demo:
	@$(CLI) demo preflight --conf $(demo_conf) $(codec_opt)
	$(CLI) demo data --conf conf/demo_data.yaml --out $(DEMO)
	$(CLI) cache --conf $(demo_conf) $(codec_opt) --clean $(DEMO)/clean --noise $(DEMO)/noise \
		--out $(DEMO_CACHE)
	$(CLI) demo testset --conf $(demo_conf) --corpus $(DEMO) --out $(DEMO_WORK)/testset
	$(CLI) train --conf $(demo_conf) --cache $(DEMO_CACHE) --run $(DEMO_WORK)/train \
		--watch $(DEMO_WORK)/testset --watch-conf $(demo_conf) $(if $(CODEC),--watch-codec $(CODEC))
	$(CLI) denoise $(DEMO_WORK)/testset/noisy $(DEMO_WORK)/denoised --conf $(demo_conf) \
		$(codec_opt) --checkpoint $(DEMO_WORK)/train/best.pt
	$(CLI) evaluate --clean $(DEMO_WORK)/testset/clean --noisy $(DEMO_WORK)/testset/noisy \
		--enhanced $(DEMO_WORK)/denoised --out $(DEMO_WORK)/eval --conf $(demo_conf)
	@echo "demo done: denoised audio in $(DEMO_WORK)/denoised, report in $(DEMO_WORK)/eval,"
	@echo "scores per checkpoint in $(DEMO_WORK)/train/eval/scores.png (and tensorboard --logdir $(DEMO_WORK)/train)"

# tests run in TEST_WORKERS processes (pytest-xdist; "auto": one per core, 0: in this process)
test:
	$(PY) -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-fast:
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

lint:
	$(VENV)/bin/ruff check .

# benchmarks: each prints its table and appends it to BENCHMARKS.md (BENCH="cache train" to choose)
bench:
	@for b in $(BENCH); do echo "== bench/$$b.py"; $(PY) bench/$$b.py || exit 1; done

# what the Makefile makes (keeps the demo corpus's downloaded packages, data/demo/.debs)
clean:
	rm -rf $(OUT) $(CACHE) runs data/tiny_corpus data/demo_cache_* .pytest_cache .ruff_cache
	@if [ -d $(DEMO) ]; then find $(DEMO) -mindepth 1 -maxdepth 1 ! -name .debs -exec rm -rf {} +; fi
