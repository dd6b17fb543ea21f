#!/usr/bin/env bash
# Bakes and verifies the default image. Placeholder stages fill in as the builder and
# verifier land; for now it lints and locks the default recipe and fills the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
recipe=recipes/debian-12.yaml
bin/kubebake recipe lint "$recipe"
bin/kubebake fetch "$recipe"
