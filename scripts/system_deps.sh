#!/usr/bin/env bash
# The system packages the test suite needs, checked before any test runs:
#   PostgreSQL (Postgres variants of the store and graph tests, worker claiming), Chromium (the web pages in a
#   real browser), a Compose client (docker-compose.yml validated; no Docker engine runs) and a font for plots.
# As root with apt-get they are installed; otherwise a missing one stops here with one line naming it.
set -euo pipefail

missing=()
ls -d /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
command -v docker-compose >/dev/null 2>&1 || { command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; } \
  || missing+=(docker-compose)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)

[ ${#missing[@]} -eq 0 ] && exit 0
if [ -n "${PROMPTLOOP_TEST_POSTGRES_URL:-}" ]; then  # a PostgreSQL named by URL needs no local server
  missing=("${missing[@]/postgresql}"); read -r -a missing <<< "${missing[*]}"
  [ ${#missing[@]} -eq 0 ] && exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing the tests' system packages: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi
echo "error: the tests need system packages that are missing: ${missing[*]}; install them (as root: apt-get install ${missing[*]}) and run make test again" >&2
exit 2
