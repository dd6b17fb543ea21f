# kubebake: `make demo` bakes and verifies the default image, `make test` runs every test.
GO      ?= go
BIN     := bin/kubebake
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# One stable cache for artifacts, rootfs tarballs and Go-built binaries, kept between runs.
export KUBEBAKE_CACHE ?= $(HOME)/.cache/kubebake
# Go test timeout: the full suite builds Kubernetes from source and boots VMs under TCG.
TEST_TIMEOUT ?= 80m

.PHONY: all build deps test test-short bench demo fmt vet clean

all: build

# kubebake-ignition goes into every image, so it is built reproducibly (no version stamp,
# no build ID): its bytes are part of the image's.
build:
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/kubebake
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags "-s -w -buildid=" -o bin/kubebake-ignition ./cmd/kubebake-ignition

# System packages (QEMU, OVMF, mmdebstrap, e2fsprogs from backports, ...), from the machine's apt.
deps:
	./scripts/install-deps.sh

# Every test, including the real tools, the Kubernetes build and the QEMU boots.
test: deps build vet
	$(GO) test -timeout $(TEST_TIMEOUT) ./...

# The fast subset for the edit loop: no network, no VM boots, no Kubernetes compile.
test-short: build
	$(GO) test -short ./...

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
