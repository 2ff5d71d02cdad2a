#!/usr/bin/env bash
# Run the Resee example project: install, migrate, seed a small data set and serve it on
# http://127.0.0.1:8000/ (log in with user0001 / demo). Needs only Python: with no
# DATABASE_URL / REDIS_URL it uses SQLite and Django's local-memory cache.
#
#   ./scripts/demo.sh            # serve until Ctrl-C
#   ./scripts/demo.sh --smoke    # serve, call every endpoint once, stop
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/bootstrap.sh all example
# The debug pages (and the development SECRET_KEY) are for this localhost server only; the
# project defaults to DEBUG off.
export DJANGO_DEBUG="${DJANGO_DEBUG:-1}"
cd example_project
python manage.py migrate --no-input -v 0
python manage.py seed_demo --flush --users "${DEMO_USERS:-20}" --contents "${DEMO_CONTENTS:-2000}" \
  --history "${DEMO_HISTORY:-20000}"

port="${PORT:-8000}"
if [ "${1:-}" != "--smoke" ]; then
  echo "demo: serving on http://127.0.0.1:$port/api/review/today/ (user0001 / demo)" >&2
  exec python manage.py runserver "127.0.0.1:$port"
fi

python manage.py runserver --noreload "127.0.0.1:$port" >/tmp/resee-demo.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
python - "$port" <<'PY'
import base64, json, sys, time, urllib.request

base = f"http://127.0.0.1:{sys.argv[1]}"
auth = "Basic " + base64.b64encode(b"user0001:demo").decode()


def call(method: str, path: str, body: dict | None = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", auth)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        payload = json.loads(resp.read() or b"null")
        print(f"{method:6} {path:40} {resp.status}")
        return payload


for _ in range(50):
    try:
        urllib.request.urlopen(base + "/api/review/today/", timeout=1)
    except urllib.error.HTTPError:
        break  # 401/403: the server is up
    except OSError:
        time.sleep(0.2)
today = call("GET", "/api/review/today/")
call("GET", "/api/analytics/stats/")
call("GET", "/api/content/?page=1")
categories = call("GET", "/api/categories/")
first = categories["results"][0] if isinstance(categories, dict) else categories[0]
created = call("POST", "/api/content/", {"title": "Smoke", "body": "test", "category": first["id"]})
reviews = today["results"] if isinstance(today, dict) else today
if reviews:
    call("POST", f"/api/review/complete/{reviews[0]['id']}/", {"result": "remembered"})
call("DELETE", f"/api/content/{created['id']}/")
print("demo: smoke workload passed")
PY
