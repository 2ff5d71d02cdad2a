#!/usr/bin/env bash
# Build the sdist and wheel, install the wheel into a fresh venv (core only, then with all
# extras) and import it, so packaging mistakes (missing py.typed, modules left out of the
# wheel, wrong dependencies) fail CI rather than a user's install.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh all dev

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
python -m build --outdir "$out/dist" . >/dev/null
wheel="$(ls "$out"/dist/resee_perf-*.whl)"
echo "check_wheel: built $(basename "$wheel") and $(basename "$(ls "$out"/dist/*.tar.gz)")" >&2

python3 -m venv "$out/venv"
"$out/venv/bin/python" -m pip install --quiet "$wheel"
"$out/venv/bin/python" - <<'PY'
import importlib.resources

import resee_perf

assert importlib.resources.files("resee_perf").joinpath("py.typed").is_file(), "py.typed missing"
print(f"check_wheel: resee_perf {resee_perf.__version__} imports with Django only")
PY
"$out/venv/bin/python" -m pip install --quiet "$wheel[all]"
"$out/venv/bin/python" -c "import django_redis, psycopg, psycopg_pool, prometheus_client, resee_perf; print('check_wheel: extras import')"
