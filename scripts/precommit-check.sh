#!/usr/bin/env bash
# The lint gates of `make test` on exactly what is committed (run before pushing).
set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git archive HEAD | tar -x -C "$tmp"
cd "$tmp"
paths="src tests"; [ -d bench ] && paths="$paths bench"
"$OLDPWD/.venv/bin/ruff" format --check $paths
"$OLDPWD/.venv/bin/ruff" check $paths
"$OLDPWD/.venv/bin/mypy" --strict src
