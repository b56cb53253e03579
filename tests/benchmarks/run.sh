#!/usr/bin/env bash
# The one command: kernel_collab's sidecar vs jupyter-collaboration, same workloads, same run.
#   tests/benchmarks/run.sh --quick    # ~2 min 50 s on 2 cores (no browser workload), history's ~10 s included
#   tests/benchmarks/run.sh            # full, about 25 min
# Other options go to `python -m tests.benchmarks` (see --help). Exits non-zero without a table
# if either system does not start or a workload does not complete.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$ROOT/.venv"
PEER="$HERE/.peer-venv"
# jupyter-collaboration 5.0.4 is the newest release (checked with `pip index versions`); it
# needs jupyterlab>=4.6,<5 and jupyter-server-ydoc 3.0.x (pycrdt-websocket 0.16, pycrdt-store).
PEER_REQS=("jupyter-collaboration==5.0.4" "jupyter_server>=2.19,<3")

pick_python() {
    for py in "${PYTHON:-}" python3.11 python3; do
        if [ -n "$py" ] && command -v "$py" >/dev/null 2>&1; then echo "$py"; return; fi
    done
    echo "run.sh: no python3 found" >&2; exit 1
}
PY="$(pick_python)"

# 1. The peer system's own environment (never mixed with ours).
stamp="${PEER_REQS[*]}"
if [ ! -x "$PEER/bin/jupyter-server" ] || [ "$(cat "$PEER/.bench-stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "run.sh: creating $PEER ($stamp)" >&2
    rm -rf "$PEER"
    "$PY" -m venv "$PEER"
    "$PEER/bin/pip" install -q "${PEER_REQS[@]}"
    echo "$stamp" > "$PEER/.bench-stamp"
fi

# 2. Our package in the project venv, its lab extension built, Debian's chromium for the
#    browser workloads and openssh-server's sshd for kernel-remote (the other host's): the same
#    set-up as scripts/test.
(cd "$ROOT" && source scripts/setup-env && source scripts/setup-browser \
    && source scripts/setup-remote) >&2

# 3. Benchmark-only packages (matplotlib for the plots, Playwright for the browser) in .venv; they are not the project's
#    dependencies and stay out of pyproject.toml.
if ! "$VENV/bin/python" -c 'import matplotlib, playwright' 2>/dev/null; then
    echo "run.sh: installing $HERE/requirements.txt into $VENV" >&2
    "$VENV/bin/pip" install -q -r "$HERE/requirements.txt"
fi

cd "$ROOT"
env PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" -m tests.benchmarks "$@"
"$VENV/bin/python" -m tests.benchmarks.history $([[ " $* " == *" --quick "* ]] && echo --quick)
