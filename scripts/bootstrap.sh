#!/usr/bin/env bash
# Create .venv (if missing) and install resee-perf into it, editable, with the extras and
# dependency groups named in $1 / $2. Re-installs only when pyproject.toml or the Python
# changed; a .venv on another Python (an older checkout's 3.11) is recreated.
#
#   source scripts/bootstrap.sh "all" "dev"
#
# The venv runs on Python 3.13 (Django 6.x needs 3.12+), found by best_python below; set
# PYTHON=/path/to/python to use another one.
set -euo pipefail

# find_python 3.13: print the path of a working python3.13. Tries PATH, then pyenv (whose
# shims fail unless a pyenv version selects the interpreter), then pyenv's version dirs.
find_python() {
  local want="$1" candidate version
  if candidate="$(command -v "python$want" 2>/dev/null)" && "$candidate" -c '' 2>/dev/null; then
    echo "$candidate"
    return 0
  fi
  if command -v pyenv >/dev/null 2>&1; then
    for version in $(pyenv versions --bare 2>/dev/null | grep -E "^$want(\.|$)" | sort -rV); do
      if candidate="$(PYENV_VERSION="$version" pyenv which "python$want" 2>/dev/null)" \
        && "$candidate" -c '' 2>/dev/null; then
        echo "$candidate"
        return 0
      fi
    done
  fi
  for candidate in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$want"*/bin/"python$want" \
    /root/.pyenv/versions/"$want"*/bin/"python$want" 2>/dev/null | sort -rV); do
    if "$candidate" -c '' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

# The newest Python that runs the newest Django (6.x needs 3.12+); else python3 (3.11+), on
# which pip installs Django 5.2: the demo runs the same, the tests of Django 6.1 do not.
best_python() {
  find_python 3.13 || find_python 3.12 || {
    echo "bootstrap: no python3.13 or python3.12 found (PATH, pyenv); using python3, so Django 5.2 (set PYTHON=/path/to/python3.13 for 6.x)" >&2
    command -v python3
  }
}

_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_extras="${1:-all}"
_group="${2:-dev}"
_venv="${VENV:-$_root/.venv}"
_python="${PYTHON:-$(best_python)}"
_python_version="$("$_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

if [ -x "$_venv/bin/python" ] \
  && [ "$("$_venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" \
    != "$_python_version" ]; then
  echo "bootstrap: $_venv is not on Python $_python_version; recreating it" >&2
  rm -rf "$_venv"
fi
if [ ! -x "$_venv/bin/python" ]; then
  echo "bootstrap: creating $_venv on $_python" >&2
  "$_python" -m venv "$_venv"
fi
_stamp="$_venv/.resee-perf-installed"
_want="$(cat "$_root/pyproject.toml" | sha256sum | cut -c1-16) $_extras $_group py$_python_version"
if [ ! -f "$_stamp" ] || [ "$(cat "$_stamp")" != "$_want" ]; then
  echo "bootstrap: installing resee-perf[$_extras] with dependency group $_group" >&2
  # pip >= 25.1 understands dependency groups (PEP 735).
  "$_venv/bin/python" -m pip install --quiet --upgrade "pip>=25.1"
  "$_venv/bin/python" -m pip install --quiet -e "$_root[$_extras]" --group "$_root/pyproject.toml:$_group"
  echo "$_want" > "$_stamp"
fi
export PATH="$_venv/bin:$PATH"
