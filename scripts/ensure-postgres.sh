#!/usr/bin/env bash
# Make sure the PostgreSQL at POSTROOM_TEST_DATABASE_URL answers.
# Under CI (CI=true) start the local cluster, installing Debian's postgresql if needed,
# and fail loudly if it still does not answer. Elsewhere only report: the suite then
# runs on SQLite alone and says so.
set -u
python="${1:-python3}"
url="${POSTROOM_TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"

answers() {
  "$python" - "$url" <<'PY' >/dev/null 2>&1
import sys, psycopg
psycopg.connect(sys.argv[1], connect_timeout=3).close()
PY
}

if answers; then
  echo "PostgreSQL answers at $url"
  exit 0
fi
if [ "${CI:-}" != "true" ]; then
  echo "PostgreSQL does not answer at $url: PostgreSQL tests will be skipped (set CI=true to start it)"
  exit 0
fi
echo "PostgreSQL does not answer at $url; starting the local cluster"
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  (apt-get update -qq && apt-get install -y -qq postgresql) || {
    echo "error: could not install Debian's postgresql package" >&2; exit 1; }
fi
version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
if [ -z "$version" ]; then
  echo "error: no PostgreSQL cluster under /etc/postgresql" >&2; exit 1
fi
pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
for _ in $(seq 1 30); do
  if answers; then echo "PostgreSQL $version started"; exit 0; fi
  sleep 1
done
echo "error: PostgreSQL still does not answer at $url; start it with" >&2
echo "  pg_ctlcluster --skip-systemctl-redirect $version main start" >&2
exit 1
