#!/usr/bin/env bash
# Prints kubebake's speed figures: Go benchmarks (medians via -count) for the fast paths.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -run '^$' -bench . -benchtime 5x -count 5 ./... | tee /tmp/kubebake-bench.txt
