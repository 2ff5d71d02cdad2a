#!/usr/bin/env bash
# Create .venv (if missing) and install resee-perf into it, editable, with the extras and
# dependency groups named in $1 / $2. Re-installs only when pyproject.toml changed.
#
#   source scripts/bootstrap.sh "all" "dev"
set -euo pipefail

_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_extras="${1:-all}"
_group="${2:-dev}"
_venv="${VENV:-$_root/.venv}"
_python="${PYTHON:-python3}"

if [ ! -x "$_venv/bin/python" ]; then
  echo "bootstrap: creating $_venv" >&2
  "$_python" -m venv "$_venv"
fi
_stamp="$_venv/.resee-perf-installed"
_want="$(cat "$_root/pyproject.toml" | sha256sum | cut -c1-16) $_extras $_group"
if [ ! -f "$_stamp" ] || [ "$(cat "$_stamp")" != "$_want" ]; then
  echo "bootstrap: installing resee-perf[$_extras] with dependency group $_group" >&2
  # pip >= 25.1 understands dependency groups (PEP 735).
  "$_venv/bin/python" -m pip install --quiet --upgrade "pip>=25.1"
  "$_venv/bin/python" -m pip install --quiet -e "$_root[$_extras]" --group "$_root/pyproject.toml:$_group"
  echo "$_want" > "$_stamp"
fi
export PATH="$_venv/bin:$PATH"
