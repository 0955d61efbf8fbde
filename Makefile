# `make test` and `make demo` work on a fresh machine: they build .venv, install torch==2.13.0 only
# when the venv cannot import torch, then the requirements (which never list torch) at the exact
# versions of requirements-lock.txt, so a registry release cannot change the suite's outcome.
# `make test-latest` runs the same suite on the newest versions requirements.txt allows (drift, on
# purpose); `make lock` re-resolves the lock files.
VENV ?= .venv
PY := $(VENV)/bin/python
FIND_LINKS := $(shell [ -d /opt/wheels ] && echo --find-links /opt/wheels)
STAMP := $(VENV)/.installed

VENV457 ?= .venv457
PY457 := $(VENV457)/bin/python
VENVLATEST ?= .venv-latest
PYLATEST := $(VENVLATEST)/bin/python
# The suites are CPU-only: GPUs stay hidden even on a machine that has them (CUDA_VISIBLE_DEVICES
# empty); pytest prints the 15 slowest tests.
COMPAT_TESTS := tests/test_vlm_families.py tests/test_vlm_layers.py tests/test_vlm_loader.py tests/test_verifi_generate.py tests/test_verifi_decoding.py tests/test_verifi_cache.py tests/test_verifi_api.py tests/test_pipeline.py tests/test_tiny_weights.py

.PHONY: test test-compat test-latest lock demo bench toy-train quality clean

$(STAMP): requirements.txt requirements-test.txt requirements-lock.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(FIND_LINKS) torch==2.13.0
	$(PY) -m pip install -q $(FIND_LINKS) -c requirements-lock.txt -r requirements.txt -r requirements-test.txt
	touch $(STAMP)

test: $(STAMP)
	env CUDA_VISIBLE_DEVICES= $(PY) -m pytest -q -rs --durations=15 tests

# the VLM backends and the pipeline on the oldest supported transformers (4.57), also pinned
$(VENV457)/.installed: requirements.txt requirements-test.txt requirements-lock-457.txt
	test -x $(PY457) || python3 -m venv $(VENV457)
	$(PY457) -c "import torch" 2>/dev/null || $(PY457) -m pip install -q $(FIND_LINKS) torch==2.13.0
	$(PY457) -m pip install -q $(FIND_LINKS) -c requirements-lock-457.txt -r requirements.txt -r requirements-test.txt "transformers==4.57.*"
	touch $@

test-compat: $(VENV457)/.installed
	env CUDA_VISIBLE_DEVICES= $(PY457) -m pytest -q -rs --durations=15 $(COMPAT_TESTS)

# the same suite on the newest versions requirements.txt allows (torch stays 2.13.0): drift, seen on purpose
test-latest:
	test -x $(PYLATEST) || python3 -m venv $(VENVLATEST)
	$(PYLATEST) -c "import torch" 2>/dev/null || $(PYLATEST) -m pip install -q $(FIND_LINKS) torch==2.13.0
	$(PYLATEST) -m pip install -q -U $(FIND_LINKS) -r requirements.txt -r requirements-test.txt torch==2.13.0
	$(PYLATEST) -m pip freeze | grep -i -E '^(transformers|accelerate|safetensors|numpy|pillow|tokenizers|einops)=='
	env CUDA_VISIBLE_DEVICES= $(PYLATEST) -m pytest -q -rs --durations=15 tests

# re-resolve both lock files from the registry today (then run make test and commit them)
lock:
	rm -rf /tmp/unifusion-lock && python3 -m venv /tmp/unifusion-lock
	/tmp/unifusion-lock/bin/pip install -q $(FIND_LINKS) torch==2.13.0 -r requirements.txt -r requirements-test.txt
	{ echo "# Exact versions for \`make test\` (pip constraints), from \`make lock\` on $$(date -u +%F)."; echo "torch==2.13.0"; /tmp/unifusion-lock/bin/pip freeze | grep -v '^torch=='; } > requirements-lock.txt
	rm -rf /tmp/unifusion-lock && python3 -m venv /tmp/unifusion-lock
	/tmp/unifusion-lock/bin/pip install -q $(FIND_LINKS) torch==2.13.0 -r requirements.txt -r requirements-test.txt "transformers==4.57.*"
	{ echo "# Exact versions for \`make test-compat\` (transformers 4.57), from \`make lock\` on $$(date -u +%F)."; echo "torch==2.13.0"; /tmp/unifusion-lock/bin/pip freeze | grep -v '^torch=='; } > requirements-lock-457.txt
	rm -rf /tmp/unifusion-lock

demo: $(STAMP)
	$(PY) -m unifusion_core demo --out demo_out

# the shipped shapes-world demo models from scratch (README "Toy models" says how long it took): the toy
# VLM (from scratch, then a warm-started second stage that adds multi-image composition rewrites), then
# the toy UniFusion (T2I, then the edit fine-tune) with the project's trainer, plus the equal-budget
# ablations; --ship copies the results into unifusion_core/toy/models; then stage 2 continues the shipped
# checkpoint (README "Toy models") and its learning curve is scored
toy-train: $(STAMP)
	$(PY) -m unifusion_core.toy train-vlm --out runs/toy/vlm_stage1 --minutes 31 --batch-size 32 --lr 1.5e-3 --mix 0.35,0.3,0.3,0.05,0 --threads 1
	$(PY) -m unifusion_core.toy train-vlm --init-from runs/toy/vlm_stage1 --out unifusion_core/toy/models/unifusion-toy-vlm --minutes 65 --batch-size 64 --lr 8e-4 --warmup-steps 50 --seed 1 --threads 2
	$(PY) -m unifusion_core.toy.recipe --vlm unifusion_core/toy/models/unifusion-toy-vlm --out runs/toy --ship
	$(PY) -m unifusion_core.toy.recipe --continue_from unifusion_core/toy/models/unifusion-toy.safetensors --out runs/stage2 --stage_steps 2100 --ship
	$(PY) -m unifusion_core.toy curve runs/stage2/main
	$(PY) -m unifusion_core.toy.recipe --continue_from unifusion_core/toy/models/unifusion-toy.safetensors --out runs/stage3 --stage_steps 3500 --stage_seed 12 --ship
	$(PY) -m unifusion_core.toy curve runs/stage3/main
	$(PY) -m unifusion_core.toy train-vlm --init-from unifusion_core/toy/models/unifusion-toy-vlm --out runs/vlm4/vlm --minutes 70 --batch-size 64 --lr 6e-4 --warmup-steps 50 --seed 3 --threads 1 --mix 0.36,0.26,0.28,0.03,0.07
	$(PY) -m unifusion_core.toy.recipe --vlm runs/vlm4/vlm --continue_from unifusion_core/toy/models/unifusion-toy.safetensors --out runs/stage4 --stage_steps 2500 --stage_seed 13 --ship
	$(PY) -m unifusion_core.toy curve runs/stage4/main
	$(PY) -m unifusion_core.toy train-vlm --init-from unifusion_core/toy/models/unifusion-toy-vlm --out runs/vlm5/vlm --minutes 65 --batch-size 64 --lr 6e-4 --warmup-steps 50 --seed 4 --threads 1 --mix 0.36,0.26,0.28,0.03,0.07 --rewrite-order request
	$(PY) -m unifusion_core.toy.recipe --vlm runs/vlm5/vlm --continue_from unifusion_core/toy/models/unifusion-toy.safetensors --out runs/stage5 --stage_steps 1800 --stage_seed 14 --rewrite_order request --ship
	$(PY) -m unifusion_core.toy curve runs/stage5/main
	$(PY) -m unifusion_core.toy train-vlm --init-from unifusion_core/toy/models/unifusion-toy-vlm --out runs/vlm6/vlm --minutes 50 --batch-size 64 --lr 6e-4 --warmup-steps 50 --seed 5 --threads 1 --mix 0.36,0.26,0.28,0.03,0.07 --rewrite-order request
	$(PY) -m unifusion_core.toy.recipe --vlm runs/vlm6/vlm --continue_from unifusion_core/toy/models/unifusion-toy.safetensors --out runs/stage6 --stage_t2i 12000 --stage_steps 1800 --stage_seed 15 --rewrite_order request --ship
	$(PY) -m unifusion_core.toy curve runs/stage6/main
	$(PY) -m unifusion_core.toy train-vlm --init-from unifusion_core/toy/models/unifusion-toy-vlm --out runs/vlm7/vlm --minutes 65 --batch-size 64 --lr 6e-4 --warmup-steps 50 --seed 6 --threads 2 --mix 0.22,0.24,0.44,0.03,0.07 --rewrite-order request
	$(PY) -m unifusion_core.toy.recipe --vlm runs/vlm7/vlm --continue_from unifusion_core/toy/models/unifusion-toy.safetensors --out runs/stage7 --stage_t2i 12000 --stage_steps 1300 --stage_seed 16 --rewrite_order request --ship
	$(PY) -m unifusion_core.toy curve runs/stage7/main
	$(PY) -m unifusion_core.toy train-vlm --init-from unifusion_core/toy/models/unifusion-toy-vlm --out runs/vlm9b/vlm --minutes 95 --batch-size 32 --lr 6e-4 --warmup-steps 50 --seed 10 --threads 1 --mix 0.15,0.22,0.53,0.03,0.07 --edit-kinds 1.2,1.5,1.2,1,2,1.2,0.3 --rewrite-order request
	$(PY) -m unifusion_core.toy ship-vlm runs/vlm9b/vlm
	$(PY) -m unifusion_core.toy train-vlm --init-from unifusion_core/toy/models/unifusion-toy-vlm --out runs/vlm10b/vlm --minutes 97 --batch-size 32 --lr 5e-4 --warmup-steps 50 --seed 12 --threads 1 --mix 0.12,0.20,0.58,0.03,0.07 --edit-kinds 1.3,1.8,2.5,0.8,2.5,1.0,0.2 --rewrite-order request
	$(PY) -m unifusion_core.toy ship-vlm runs/vlm10b/vlm
	$(PY) -m unifusion_core.toy train-vlm --init-from unifusion_core/toy/models/unifusion-toy-vlm --out runs/vlm12c/vlm --minutes 75 --batch-size 32 --lr 4e-4 --warmup-steps 50 --seed 17 --threads 1 --mix 0.10,0.30,0.50,0.03,0.07 --edit-kinds 1.7,3.0,2.7,1.5,2.0,0.8,0.15 --rewrite-order request --edit-rewrite in_place
	$(PY) -m unifusion_core.toy ship-vlm runs/vlm12c/vlm

# the quality report of the shipped toy models (README "Toy models")
quality: $(STAMP)
	$(PY) benchmarks/quality_toy.py

bench: $(STAMP)
	$(PY) benchmarks/bench_core.py

clean:
	rm -rf $(VENV) $(VENV457) $(VENVLATEST) demo_out
