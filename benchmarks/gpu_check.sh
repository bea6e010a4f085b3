#!/usr/bin/env bash
# The GPU checks (benchmarks/gpu_check.py) on a bare CUDA machine: only a Python (3.10+ with pip) and the GPU,
# no network there. See docs/gpu.md.
#
#   benchmarks/gpu_check.sh --fetch-wheels        # here, with pip access: every wheel the project needs -> .whl/
#   benchmarks/gpu_check.sh --requirements        # print the requirements the wheels are fetched for
#   benchmarks/gpu_check.sh [gpu_check.py OPTIONS] # there: install .whl/ into a fresh venv, then run
#                                                  # python benchmarks/gpu_check.py [OPTIONS], e.g. --budget 600
#
# The package list is the project's own requirements.txt (minus the lint-only tools), never written here by
# hand; pip resolves their dependencies for the GPU machine's platform (GPU_PYTHON, default 3.12; Linux
# x86_64). The torch wheel from PyPI is the CUDA build and pulls its nvidia-* wheels: several GB in .whl/.
# The install time is passed on (GPU_CHECK_INSTALL_S) so that --budget counts it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEV_ONLY='^(ruff)([<>=!~ ;]|$)'   # requirements.txt lines the GPU check never runs

requirements() {  # requirements.txt without comments, blank lines and the lint-only tools
    sed -e 's/#.*//' -e 's/[[:space:]]*$//' requirements.txt | grep -v '^$' | grep -Ev "$DEV_ONLY"
}

case "${1:-}" in
--requirements)
    requirements
    exit 0
    ;;
--fetch-wheels)
    mkdir -p .whl
    requirements > .whl/requirements.txt
    "$PY" -m pip download --quiet --only-binary=:all: --python-version "${GPU_PYTHON:-3.12}" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl -r .whl/requirements.txt
    ls .whl | wc -l | xargs echo "wheels in .whl/:"
    exit 0
    ;;
esac

start=$(date +%s)
if [[ -f .whl/requirements.txt ]]; then
    VENV=${GPU_CHECK_VENV:-/tmp/mamol-gpu-venv}
    [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --no-index --find-links .whl -r .whl/requirements.txt
    PY="$VENV/bin/python"
fi
export GPU_CHECK_INSTALL_S=$(( $(date +%s) - start ))
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_check.py "$@"
