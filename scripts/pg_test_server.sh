#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the test suite, on loopback only.
#   eval "$(scripts/pg_test_server.sh start)"   -> exports PROMPTLOOP_TEST_POSTGRES_URL
#   scripts/pg_test_server.sh stop
# Uses Debian's postgresql package (apt-get install postgresql); initdb refuses root, so as root the
# cluster runs as the 'postgres' system user the package creates.
set -euo pipefail
DIR="${PG_TEST_DIR:-/tmp/promptloop-pg}"
PORT="${PG_TEST_PORT:-55432}"
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
[ -n "$BIN" ] || BIN="$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")"
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "${1:-}" in
  start)
    if [ ! -x "$BIN/initdb" ]; then echo "echo 'PostgreSQL not installed: Postgres tests will be skipped' >&2"; exit 0; fi
    if [ ! -f "$DIR/PG_VERSION" ]; then
      mkdir -p "$DIR"; [ "$(id -u)" = 0 ] && chown postgres "$DIR"
      as_owner "$BIN/initdb" -D "$DIR" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    if ! as_owner "$BIN/pg_ctl" -D "$DIR" status >/dev/null 2>&1; then
      as_owner "$BIN/pg_ctl" -D "$DIR" -l "$DIR/server.log" -w \
        -o "-p $PORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >/dev/null
      echo "# started"  # this call started it: whoever asked stops it when done (a shell ignores the line)
    fi
    echo "export PROMPTLOOP_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$PORT/postgres"
    ;;
  stop)
    [ -f "$DIR/PG_VERSION" ] && as_owner "$BIN/pg_ctl" -D "$DIR" -m fast stop >/dev/null 2>&1 || true
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
