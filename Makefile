# cleancodec — one variable contract for every stage:
#   CONF=conf/<profile>.yaml   configuration profile (each target has its own default)
#   CODEC=random               random-init DAC-16k (offline pipeline checks; audio meaningless)
#   CODEC=/path/weights.pth    DAC weights in DAC's release format
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
CHECKPOINT ?=
PYTEST_ARGS ?=
DEMO ?= data/demo

codec_opt = $(if $(CODEC),--codec $(CODEC))
conf_or = $(if $(CONF),$(CONF),$(1))

.PHONY: install demo-data cache train denoise evaluate demo test test-fast bench clean help

help:
	@echo "make install | demo-data | cache | train | denoise INPUT=dir | evaluate | demo | test | bench"

install:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade "pip>=23"
	$(VENV)/bin/pip install torch==2.13.0
	# dac and audiotools without their torchaudio requirement (see pipeline/codec.py)
	$(VENV)/bin/pip install --no-deps descript-audio-codec==1.0.0 descript-audiotools==0.7.2
	$(VENV)/bin/pip install -e '.[dev]'
	$(PY) -c "import pipeline.codec as c; c.import_dac(); print('cleancodec installed; dac imports fine')"

# demo corpus (real speech + noise from Debian packages): DEMO=dir to build it elsewhere
demo-data:
	$(CLI) demo-data --conf $(call conf_or,conf/demo_data.yaml) --out $(DEMO)

cache:
	$(CLI) cache --conf $(call conf_or,conf/cache.yaml) $(codec_opt) \
		$(if $(CLEAN),--clean $(CLEAN)) $(if $(NOISE),--noise $(NOISE)) \
		$(if $(RIR),--rir $(RIR)) --out $(OUT)

# train: CACHE (default data/cache), RUN (default runs/<name>), CONF (default conf/train.yaml),
# optional PRESET=medium|large, STEPS=N, RESTART=1. Rerunning resumes from $(RUN)/latest.pt.
train:
	$(CLI) train --conf $(call conf_or,conf/train.yaml) --cache $(CACHE) \
		$(if $(RUN),--run $(RUN)) $(if $(PRESET),--preset $(PRESET)) \
		$(if $(STEPS),--steps $(STEPS)) $(if $(RESTART),--restart)

test:
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast:
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf data/cache runs .pytest_cache
