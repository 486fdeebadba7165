#!/usr/bin/env bash
# End-to-end suite: a fresh MariaDB/MySQL database, `payments-svc serve` and every worker
# as real processes, the suite (e2e/test_*.py) over gRPC and HTTP, then everything torn down.
#
#   bash e2e/run.sh [pytest args...]          (or: make e2e)
#
# Database: the server named by E2E_DATABASE_URL (a SQLAlchemy URL such as
# mysql+asyncmy://user:pass@host:3306/ or a Go DSN user:pass@tcp(host:3306)/x; the
# database name in it is ignored), else the local MariaDB at TEST_MYSQL_HOST/PORT/USER/
# PASSWORD (default root@127.0.0.1:3306), started here if it is installed and down (and
# stopped again at the end). A new database payments_e2e_<random> is created, migrated
# with `payments-svc db migrate`, and dropped at the end (E2E_KEEP_DATABASE=1 keeps it).
# Without MariaDB, E2E_DATABASE_URL=sqlite:// runs the same suite on a SQLite file;
# E2E_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/ on PostgreSQL (.ci/run runs all three).
#
# Python: $PYTHON, else .venv/bin/python (make install), else the active virtualenv's, else python3; it must have
# payments-svc installed with its dev extras.
#
# Logs of every process: $E2E_RUN_DIR/logs (kept, and printed, when the suite fails).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python
  elif [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then PYTHON="$VIRTUAL_ENV/bin/python"
  else PYTHON=python3; fi
fi
if ! "$PYTHON" -c 'import payments_svc, pytest' 2>/dev/null; then
  echo "e2e: $PYTHON cannot import payments_svc and pytest; run 'make install' or set PYTHON=/path/to/venv/bin/python" >&2
  exit 2
fi
export PYTHON

RUN_DIR="${E2E_RUN_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/payments-e2e.XXXXXX")}"
mkdir -p "$RUN_DIR/logs" "$RUN_DIR/pids"
export E2E_RUN_DIR="$RUN_DIR"

STARTED_MARIADB=""
E2E_DB_URL=""
STATUS=1

cleanup() {
  local code=$?
  [[ $STATUS -eq 0 ]] || STATUS=$code
  # Anything the suite started and did not stop (it was killed, or failed in set-up).
  "$PYTHON" -m e2e.stack reap "$RUN_DIR" || true
  if [[ -n "$E2E_DB_URL" && -z "${E2E_KEEP_DATABASE:-}" ]]; then
    "$PYTHON" -m e2e.stack drop-db "$E2E_DB_URL" || echo "e2e: could not drop the database" >&2
  elif [[ -n "$E2E_DB_URL" ]]; then
    echo "e2e: kept the database (E2E_KEEP_DATABASE): $E2E_DB_URL" >&2
  fi
  if [[ -n "$STARTED_MARIADB" ]]; then
    start-stop-daemon --stop --quiet --oknodo --retry 30 --pidfile "$STARTED_MARIADB" || true
    rm -f "$STARTED_MARIADB"
  fi
  if [[ $STATUS -ne 0 ]]; then
    for log in "$RUN_DIR"/logs/*.log; do
      [[ -f "$log" ]] || continue
      echo "----- last lines of $log" >&2
      tail -n 40 "$log" >&2
    done
    echo "e2e: FAILED; logs in $RUN_DIR/logs" >&2
  elif [[ -z "${E2E_KEEP_RUN_DIR:-}" ]]; then
    rm -rf "$RUN_DIR"
  fi
  exit "$STATUS"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mysql_ping() {
  mysqladmin --protocol=tcp -h"${TEST_MYSQL_HOST:-127.0.0.1}" -P"${TEST_MYSQL_PORT:-3306}" \
    -u"${TEST_MYSQL_USER:-root}" ${TEST_MYSQL_PASSWORD:+-p"$TEST_MYSQL_PASSWORD"} ping >/dev/null 2>&1
}

if [[ -z "${E2E_DATABASE_URL:-}" ]] && command -v mysqladmin >/dev/null && ! mysql_ping; then
  if [[ -x /usr/sbin/mariadbd ]]; then
    echo "e2e: starting the local MariaDB" >&2
    STARTED_MARIADB="$RUN_DIR/mariadbd.pid"
    start-stop-daemon --start --oknodo --background --make-pidfile --pidfile "$STARTED_MARIADB" \
      --exec /usr/sbin/mariadbd
    for _ in $(seq 1 60); do mysql_ping && break; sleep 0.5; done
  fi
fi

E2E_DB_URL="$("$PYTHON" -m e2e.stack create-db "${E2E_DATABASE_URL:-}" "$RUN_DIR")" || {
  echo "e2e: no database: set E2E_DATABASE_URL, or install MariaDB (apt-get install mariadb-server)" >&2
  exit 1
}
export E2E_DB_URL
echo "e2e: database $("$PYTHON" -c 'import sys; from payments_svc.config import redact_url; print(redact_url(sys.argv[1]))' "$E2E_DB_URL")" >&2
PAYMENTS_DATABASE_URL="$E2E_DB_URL" "$PYTHON" -m payments_svc db migrate >&2

set +e
"$PYTHON" -m pytest e2e -p no:cacheprovider -q -ra "$@"
STATUS=$?
set -e
exit "$STATUS"
