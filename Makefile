# vl2v entry points. Everything runs offline once the models and datasets are on disk.
DATASET ?= officehome
MODEL ?= openai/clip-vit-base-patch16
EMBED_FLAGS ?=
CARGO ?= cargo

.PHONY: build test data embed distill demo lab-models lint bench fixtures clean-cache interop domainbed-check reproduce compare

# The cuda feature where a CUDA toolkit is found (nvcc on PATH, or CUDA_HOME), or with CUDA=1; CUDA=0 builds
# for the CPU only. Every command's --device auto then takes GPU 0 when one answers.
CUDA ?= $(if $(or $(shell command -v nvcc 2>/dev/null),$(CUDA_HOME)),1,0)
CUDA_FEATURES = $(if $(filter 1,$(CUDA)),--features vl2v-shared/cuda,)
build:
	@echo "make build: $(if $(filter 1,$(CUDA)),with CUDA (the cuda feature; CUDA=0 for CPU only),for the CPU (no nvcc on PATH and no CUDA_HOME; CUDA=1 forces the cuda feature))" >&2
	$(CARGO) build --release --bins $(CUDA_FEATURES)

# The test command CI runs. Binaries are built first: the end-to-end tests run them.
test:
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

# Download a benchmark into data/ with DomainBed's sources and layout (needs network; gdown for Drive).
# DATASET=synthdg generates the procedural benchmark offline instead.
data:
ifeq ($(DATASET),synthdg)
	$(CARGO) run --release -p vl2v-lab --bin synthdg -- benchmark --out data/synthdg
else
	python3 data/download.py $(DATASET)
endif

# Cache the CLIP teacher's embeddings of data/<dataset>: make embed DATASET=pacs EMBED_FLAGS="--views 8"
embed: build
	./target/release/embed --dataset $(DATASET) --model $(MODEL) $(EMBED_FLAGS)

# The paper's pipeline from the caches: robustness table, teacher zero-shot, then (given STUDENT_CACHE, a
# cache of the student's features on the same views) ADiP Align and Distill for every held-out domain, both
# with SWAD as the paper's headline numbers, and the report (runs/<dataset>/report.md and report.png).
TEACHER_CACHE ?= data/cache/$(DATASET)/$(subst /,--,$(MODEL))
STUDENT_CACHE ?=
DISTILL_FLAGS ?=
distill: build
	./target/release/distill analyze --cache "$(TEACHER_CACHE)"
	./target/release/distill run --cache "$(TEACHER_CACHE)" --algorithm zeroshot
	$(if $(STUDENT_CACHE),./target/release/distill run --cache "$(TEACHER_CACHE)" --student-cache "$(STUDENT_CACHE)" --algorithm adip-align --swad $(DISTILL_FLAGS))
	$(if $(STUDENT_CACHE),./target/release/distill run --cache "$(TEACHER_CACHE)" --student-cache "$(STUDENT_CACHE)" --algorithm adip-distill --swad $(DISTILL_FLAGS))
	./target/release/distill report --dataset $(DATASET)

# The paper's recipe for one student (data/reproduce.sh): teacher cache (CLIP ViT-B/16, the official input,
# REPRO_VIEWS views), student cache, Align then Distill with SWAD for every held-out domain and trial seeds 0 1 2,
# the KD and ERM fine-tuning baselines with SWAD, and the report with the paper's numbers beside ours. Resumable.
# make reproduce DATASET=officehome STUDENT=vit-base [STUDENT_MODEL=<weights>]; students: resnet50, vit-small,
# vit-base, deit-small (distill/official_scripts/).
STUDENT ?= vit-base
STUDENT_MODEL ?=
reproduce: build
	REPRO_MODEL="$(STUDENT_MODEL)" bash data/reproduce.sh $(DATASET) $(STUDENT)

# Every algorithm of the CLIP-distillation family on one dataset's caches, three trial seeds, one report
# (data/compare.sh): make compare DATASET=officehome STUDENT_CACHE=<student cache> [COMPARE_FLAGS="--steps 1001"]
# [COMPARE_OUT=runs] [COMPARE_TRIALS="0 1 2"].
# First adds rise's and scmd's prompts to the teacher cache (embed as `make embed` ran it, plus --templates;
# the images are not embedded again). Resumable.
COMPARE_FLAGS ?=
COMPARE_OUT ?= runs
COMPARE_TRIALS ?= 0 1 2
compare: build
	@test -n "$(STUDENT_CACHE)" || { echo "make compare needs STUDENT_CACHE=<the student cache of the same dataset and views>" >&2; exit 2; }
	./target/release/embed --dataset $(DATASET) --model $(MODEL) $(EMBED_FLAGS) --templates distill/prompt_styles/rise.txt >/dev/null
	T="$$(./target/release/embed --dataset $(DATASET) --model $(MODEL) $(EMBED_FLAGS) --templates distill/prompt_styles/scmd.txt | tail -n 1)" && \
		COMPARE_FLAGS="$(COMPARE_FLAGS)" COMPARE_OUT="$(COMPARE_OUT)" COMPARE_TRIALS="$(COMPARE_TRIALS)" bash data/compare.sh "$$T" "$(STUDENT_CACHE)"

# The whole product on the built-in offline miniature (data/demo.sh): generated benchmark, the mini CLIP
# teacher and photo-only mini student of shared/models, every algorithm leave-one-domain-out, the report.
# DEMO_TRIALS="0 1 2" for three trial seeds.
demo: build
	bash data/demo.sh

# Retrain the demo's models from generated data (their provenance.json records the result). Not needed to
# run the demo: the models are committed. One candle thread, as they were trained (the split of the sums
# over threads changes float rounding, so other thread counts give equivalent, not identical, weights).
LAB ?= data/lab-work
lab-models: build
	./target/release/synthdg corpus --out $(LAB)/corpus-plain --seed 1 --per-class 200 --plain-captions
	./target/release/synthdg corpus --out $(LAB)/photo --seed 2 --per-class 300 --styles photo
	CANDLE_NUM_THREADS=1 ./target/release/synthdg pretrain clip --corpus $(LAB)/corpus-plain --out shared/models/mini-clip --steps 4000 --seed 0
	CANDLE_NUM_THREADS=1 ./target/release/synthdg pretrain student --corpus $(LAB)/photo --out shared/models/mini-vit --steps 1000 --seed 0

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Against PyTorch, same threads: embed images/s (BENCH_N=480, BENCH_ARCH=b16|b32), an OfficeHome-sized
# adip-align run, one student training step (ResNet-18/50, ViT-S/B/16 at batches 16 and 32), a 108-run λ
# sweep of adip-align, the training loader, a whole erm-ft run of ResNet-18 on 480 JPEGs (BENCH_STEPS=4, wall
# seconds and peak RSS of both processes), and the cache-only algorithms' memory as the cache grows.
bench:
	CARGO="$(CARGO)" bash tests/bench/run_bench.sh
	CARGO="$(CARGO)" bash tests/bench/run_align_bench.sh
	CARGO="$(CARGO)" bash tests/bench/run_step_bench.sh
	CARGO="$(CARGO)" bash tests/bench/run_sweep_bench.sh
	CARGO="$(CARGO)" bash tests/bench/run_loader_bench.sh
	CARGO="$(CARGO)" bash tests/bench/run_erm_ft_bench.sh
	CARGO="$(CARGO)" bash tests/bench/run_cache_scale_bench.sh

# Regenerate every committed reference fixture from its pinned Python generator (tests/fixtures/requirements.txt;
# needs PyPI, never run in CI): the tiny CLIP with transformers' outputs, the student backbones, DomainBed's
# splits, Pillow's values for shared/src/image/, and torchvision's rendering of stored views (which reads the
# images make_fixtures.py writes, so it runs last).
fixtures:
	pip install -r tests/fixtures/requirements.txt
	python3 tests/fixtures/make_fixtures.py
	python3 tests/fixtures/students/make_students.py
	python3 tests/fixtures/splits/make_splits.py
	python3 tests/fixtures/make_pillow_fixtures.py
	python3 tests/fixtures/make_view_fixture.py

# Open every kind of cache embed writes (tiny CLIP f32/f16 with views and texts, students) with the pinned
# pyarrow, polars and DuckDB of tests/interop/requirements.txt (a venv in target/; needs PyPI the first
# time; never run in CI).
interop:
	CARGO="$(CARGO)" bash tests/interop/run_interop.sh

# DomainBed's own collect_results.py and model selection (vendored without torch in tests/fixtures/domainbed)
# read a reported run folder's domainbed/ view and select, run by run, what `distill report` selected; numpy
# and tqdm pinned in tests/domainbed/requirements.txt go into a venv in target/ (needs PyPI the first time;
# never run in CI). A demo-sized folder is made under target/domainbed-check, or DOMAINBED_RUNS=runs/demo/synthdg
# checks that one.
domainbed-check:
	CARGO="$(CARGO)" bash tests/domainbed/run_domainbed_check.sh
