# kubebake: `make demo` bakes and verifies the default image, `make test` runs every test.
GO      ?= go
BIN     := bin/kubebake
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# One stable cache for artifacts, rootfs tarballs and Go-built binaries, kept between runs.
export KUBEBAKE_CACHE ?= $(HOME)/.cache/kubebake
# Go test timeout: the full suite builds Kubernetes from source and boots VMs under TCG.
TEST_TIMEOUT ?= 80m
# `make fuzz` (part of `make test`) runs each fuzz target for FUZZTIME calls. A count, not a
# duration: Go 1.26's fuzz coordinator can fail a duration-bounded run with a bare "context
# deadline exceeded" and no crasher when the deadline races a busy worker (go.dev/issue/75804,
# fixed in Go 1.27); a count sets no deadline. 50000 calls take 5-17 s per target here.
# By default Go also spends up to 60s minimizing each new interesting input, O(n^2) runs for a
# multi-KB seed such as a lock file; a bounded run does not minimize, and a failing input is
# still saved in testdata/fuzz, as found.
FUZZTIME ?= 50000x
FUZZMINIMIZETIME ?= 0

.PHONY: all build deps test test-short bench demo fmt vet clean fuzz

all: build

# kubebake-ignition goes into every image, so it is built reproducibly (no version stamp,
# no build ID): its bytes are part of the image's.
build:
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/kubebake
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags "-s -w -buildid=" -o bin/kubebake-ignition ./cmd/kubebake-ignition

# System packages (QEMU, OVMF, mmdebstrap, e2fsprogs from backports, ...), from the machine's apt.
deps:
	./scripts/install-deps.sh

# Every test, including the real tools, the Kubernetes build and the QEMU boots. The VM boots
# (package verify) run last and alone: under TCG the host's cores are the VMs' only CPU, and a
# cluster whose minions shared them with the builder's tests took 12 minutes to import its
# images and missed its step timeouts.
test: deps build vet fuzz
	$(GO) test -timeout $(TEST_TIMEOUT) $$($(GO) list ./... | grep -v '/verify$$')
	$(GO) test -timeout $(TEST_TIMEOUT) ./verify

# The fast subset for the edit loop: no network, no VM boots, no Kubernetes compile.
test-short: build
	$(GO) test -short ./...

# Every fuzz target in turn, for FUZZTIME each (go test fuzzes one target per package per run).
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./recipes
	$(GO) test -run '^$$' -fuzz '^FuzzParseLock$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./recipes
	$(GO) test -run '^$$' -fuzz '^FuzzParseBundle$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./cloudinit
	$(GO) test -run '^$$' -fuzz '^FuzzParsePlan$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) ./cloudinit/ignition

bench: deps build
	./scripts/bench.sh

demo: deps build
	./scripts/demo.sh

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

clean:
	rm -rf bin out
