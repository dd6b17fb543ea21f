#!/usr/bin/env bash
# Times `kubebake verify` per role, boot to verdict, and prints the median of RUNS runs.
#   scripts/bench-verify.sh OUTDIR|IMAGE [RUNS] [ACCEL]
# RUNS defaults to 3, ACCEL to auto (TCG on machines where KVM cannot boot). One VM at a time,
# so that the figure is a single node's, not two nodes sharing the cores.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:?usage: scripts/bench-verify.sh OUTDIR|IMAGE [RUNS] [ACCEL]}
runs=${2:-3}
accel=${3:-auto}
bin=bin/kubebake
[ -x "$bin" ] || make build >/dev/null
times=$(mktemp)
trap 'rm -f "$times"' EXIT
for role in master minion; do
	for i in $(seq 1 "$runs"); do
		json=$("$bin" verify "$image" --role "$role" --accel "$accel" --parallel 1 -o json 2>/dev/null || true)
		# One result per run: "seconds" of the node and whether it passed.
		secs=$(printf '%s' "$json" | grep -o '"seconds": [0-9.]*' | tail -n 1 | awk '{print $2}')
		pass=$(printf '%s' "$json" | grep -o '"pass": [a-z]*' | tail -n 1 | awk '{print $2}')
		acc=$(printf '%s' "$json" | grep -o '"accel": "[a-z]*"' | head -n 1 | cut -d'"' -f4)
		echo "$role run $i: ${secs:-?} s (${acc:-?}, pass=${pass:-?})" >&2
		[ -n "$secs" ] && echo "$role $secs" >>"$times"
	done
done
echo "role    runs  median_s  min_s  max_s  (boot to verdict, goal < 120 s)"
for role in master minion; do
	grep "^$role " "$times" | awk '{print $2}' | sort -n | awk -v role="$role" '
		{ v[NR] = $1 }
		END {
			if (NR == 0) { printf "%-7s %4d  %8s\n", role, 0, "-"; exit }
			m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			printf "%-7s %4d  %8.1f  %5.1f  %5.1f\n", role, NR, m, v[1], v[NR]
		}'
done
