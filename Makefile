# The two commands of the README:
#   make run   - build and run the server (embedded default: local data dir)
#   make test  - build and run the whole test suite
# Both install what they need first (scripts/setup.sh). Tests and the server
# share the release profile, so DataFusion is compiled once.

export CARGO_TARGET_DIR ?= $(HOME)/.cache/quiver-target
export PATH := $(HOME)/.cargo/bin:$(PATH)
ARGS ?=

.PHONY: run test build setup docker-check

setup:
	@scripts/setup.sh

build: setup
	cargo build --release --bin quiver

run: build
	$(CARGO_TARGET_DIR)/release/quiver serve $(ARGS)

test:
	@scripts/setup.sh --test
	cargo test --release --workspace

# Build docker/Dockerfile and smoke-test the image (says so and stops where
# no docker daemon runs).
docker-check:
	@scripts/docker-check.sh
