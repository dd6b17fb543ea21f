#!/usr/bin/env bash
# `make demo`: bake the default image and prove it by booting it once per role.
# `make demo` has already installed the system packages and built bin/kubebake.
set -euo pipefail
cd "$(dirname "$0")/.."
recipe=recipes/debian-12.yaml
out=${KUBEBAKE_DEMO_OUT:-out/debian-12}
kb=bin/kubebake

step() { printf '\n== %s\n' "$*" >&2; }
start=$(date +%s)

step "lint $recipe"
$kb recipe lint "$recipe"
step "fetch every pinned input of $recipe.lock (builds Kubernetes from the Go module proxy on a cold cache)"
$kb fetch "$recipe"
step "build -> $out"
$kb build "$recipe" --out "$out"
step "verify: boot once per role (QEMU; TCG here, about 2-4 minutes a role)"
$kb verify "$out" --role all --userdata cloud-init --junit "$out/verify-junit.xml"

printf '\nkubebake demo: baked and verified %s in %ss\n' "$out" "$(($(date +%s) - start))" >&2
