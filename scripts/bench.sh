#!/usr/bin/env bash
# `make bench`: kubebake's speed figures, as medians over repeated runs.
#   1. Go benchmarks of the fast paths (warm artifact fetch, ...), 5 runs each.
#   2. Warm fetch of every artifact of the default recipe (the real lock), 7 runs.
#   3. Warm build of the default image (rootfs and artifacts cached), 3 runs.
#   3b. Publishing it: the EBS direct upload to the local fake EBS endpoint (artifacts/aws,
#      BenchmarkEBSUpload, default workers), 5 runs: MiB/s of the blocks sent, share skipped.
#   4. verify per role, boot to verdict (scripts/bench-verify.sh), 3 runs each.
#   5. a local cluster: start to all nodes Ready and to the first pod answering
#      (scripts/bench-cluster.sh), BENCH_CLUSTER_RUNS runs (default 3; 10-20 min each).
# BENCH_QUICK=1 does 1 and 2 only. Figures go to stdout; logs to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
kb=bin/kubebake
recipe=recipes/debian-12.yaml
out=${KUBEBAKE_BENCH_OUT:-out/bench-debian-12}

median() { sort -n | awk '{v[NR]=$1} END {if (NR==0) {print "-"; exit} m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.3f (min %.3f, max %.3f, n=%d)\n", m, v[1], v[NR], NR}'; }
timeit() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); awk -v s="$s" -v e="$e" 'BEGIN {printf "%.3f\n", e - s}'; }

echo "== Go benchmarks"
go test -run '^$' -bench . -benchtime 3x -count 5 ./... 2>/dev/null | grep -E '^(Benchmark|ok|pkg)' || true

echo "== warm fetch of $recipe (seconds)"
$kb fetch "$recipe" >/dev/null 2>&1 # warm the cache first
for _ in 1 2 3 4 5 6 7; do timeit $kb fetch "$recipe"; done | median

[ "${BENCH_QUICK:-0}" = 1 ] && exit 0

echo "== warm build of $recipe (seconds; rootfs and artifacts cached)"
$kb build "$recipe" --out "$out" >/dev/null 2>&1 # warm the rootfs cache first
for _ in 1 2 3; do rm -rf "$out"; timeit $kb build "$recipe" --out "$out"; done | median

echo "== EBS direct upload of $recipe to the local endpoint (fakeaws on 127.0.0.1, default workers)"
field() { awk -v f="$1" '/^BenchmarkEBSUpload/ {for (i = 2; i <= NF; i++) if ($i == f) print $(i-1)}'; }
aws_bench=$(KUBEBAKE_BENCH_IMAGE="$out" go test -run '^$' -bench '^BenchmarkEBSUpload$' -benchtime 1x -count 5 ./artifacts/aws 2>/dev/null)
printf 'MiB/s: '; field MiB/s <<<"$aws_bench" | median
printf 'blocks skipped (all zeros), %%: '; field %skipped <<<"$aws_bench" | median

echo "== verify per role (seconds, boot to verdict)"
./scripts/bench-verify.sh "$out" 3

echo "== local cluster (seconds; scripts/bench-cluster.sh)"
./scripts/bench-cluster.sh "$out" "${BENCH_CLUSTER_RUNS:-3}"
