#!/usr/bin/env bash
# Times a local cluster (kubebake cluster up: 1 master + MINIONS minions from one image) and
# prints medians of RUNS runs:
#   ready: start to every node Ready and CoreDNS Running ("cluster up" returns);
#   pod:   start to the first pod answering on its pod IP (a busybox httpd pod with a TCP
#          readiness probe, which the kubelet sends to the pod's address).
#   scripts/bench-cluster.sh OUTDIR|IMAGE [RUNS] [MINIONS]
# Under TCG on two cores one run takes 10-20 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:?usage: scripts/bench-cluster.sh OUTDIR|IMAGE [RUNS] [MINIONS]}
runs=${2:-3}
minions=${3:-2}
bin=bin/kubebake
name=bench
[ -x "$bin" ] || make build >/dev/null
export KUBEBAKE_STATE=${KUBEBAKE_STATE:-$(mktemp -d)}
times=$(mktemp)
trap '"$bin" cluster down "$name" >/dev/null 2>&1 || true; rm -f "$times"' EXIT

pod='apiVersion: v1
kind: Pod
metadata: {name: bench-web}
spec:
  containers:
  - name: web
    image: kubebake.local/busybox:1.35.0
    imagePullPolicy: Never
    command: ["httpd", "-f", "-p", "8080", "-h", "/etc"]
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 2}'

now() { date +%s.%N; }
for i in $(seq 1 "$runs"); do
	start=$(now)
	if ! "$bin" cluster up "$image" --name "$name" --minions "$minions" >/dev/null; then
		echo "run $i: cluster up failed" >&2
		"$bin" cluster down "$name" >/dev/null 2>&1 || true
		continue
	fi
	ready=$(now)
	printf '%s\n' "$pod" | "$bin" cluster kubectl "$name" -- apply -f - >/dev/null
	"$bin" cluster kubectl "$name" -- wait --for=condition=Ready pod/bench-web --timeout=15m >/dev/null
	answered=$(now)
	"$bin" cluster down "$name" >/dev/null
	awk -v s="$start" -v r="$ready" -v a="$answered" -v i="$i" \
		'BEGIN { printf "run %d: ready %.0f s, first pod answering %.0f s\n", i, r - s, a - s > "/dev/stderr"; printf "%.1f %.1f\n", r - s, a - s }' >>"$times"
done
echo "cluster (1 master + $minions minions)  runs  median_s  min_s  max_s  (goal: all Ready < 480 s)"
for col in 1 2; do
	label=$([ "$col" = 1 ] && echo "start to all nodes Ready" || echo "start to first pod answering")
	awk -v c="$col" '{print $c}' "$times" | sort -n | awk -v label="$label" '
		{ v[NR] = $1 }
		END {
			if (NR == 0) { printf "%-36s  0     -\n", label; exit }
			m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			printf "%-36s  %-4d  %-8.0f  %-5.0f  %.0f\n", label, NR, m, v[1], v[NR]
		}'
done
