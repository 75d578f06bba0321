# vl2v entry points. Everything runs offline once the models and datasets are on disk.
DATASET ?= officehome
MODEL ?= openai/clip-vit-base-patch16
EMBED_FLAGS ?=
CARGO ?= cargo

.PHONY: build test data embed distill lint bench fixtures clean-cache

build:
	$(CARGO) build --release --bins

# The test command CI runs. Binaries are built first: the end-to-end tests run them.
test:
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

# Download a benchmark into data/ with DomainBed's sources and layout (needs network; gdown for Drive).
# DATASET=synthdg generates the procedural benchmark offline instead.
data:
ifeq ($(DATASET),synthdg)
	$(CARGO) run --release -p vl2v-shared --bin synthdg -- benchmark --out data/synthdg
else
	python3 data/download.py $(DATASET)
endif

# Cache the CLIP teacher's embeddings of data/<dataset>: make embed DATASET=pacs EMBED_FLAGS="--views 8"
embed: build
	./target/release/embed --dataset $(DATASET) --model $(MODEL) $(EMBED_FLAGS)

# From the caches: robustness table, teacher zero-shot, and (given STUDENT_CACHE) ADiP Align, leave-one-out.
# As the paper, with SWAD. The distil stage arrives with the distill issue.
TEACHER_CACHE ?= data/cache/$(DATASET)/$(subst /,--,$(MODEL))
STUDENT_CACHE ?=
distill: build
	./target/release/distill analyze --cache "$(TEACHER_CACHE)"
	./target/release/distill run --cache "$(TEACHER_CACHE)" --algorithm zeroshot
	$(if $(STUDENT_CACHE),./target/release/distill run --cache "$(TEACHER_CACHE)" --student-cache "$(STUDENT_CACHE)" --algorithm adip-align --swad)
	./target/release/distill report --dataset $(DATASET)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Against PyTorch, same threads: embed images/s (BENCH_N=480, BENCH_ARCH=b16|b32), an OfficeHome-sized
# adip-align run, and one student training step (ResNet-18, ViT-S/16).
bench:
	CARGO="$(CARGO)" bash tests/bench/run_bench.sh
	CARGO="$(CARGO)" bash tests/bench/run_align_bench.sh
	CARGO="$(CARGO)" bash tests/bench/run_step_bench.sh

# Regenerate the PyTorch parity fixtures (needs torch + transformers; never run in CI).
fixtures:
	pip install -r tests/fixtures/requirements.txt
	python3 tests/fixtures/make_fixtures.py
