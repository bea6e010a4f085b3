#!/usr/bin/env bash
# The GPU checks (benchmarks/gpu_check.py) on a CUDA machine that may lack some of the project's packages.
#
#   benchmarks/gpu_check.sh --fetch-wheels   # here, with pip access: download them into .whl/ (git-ignored)
#   benchmarks/gpu_check.sh [OPTIONS]        # there: install .whl/*.whl into /tmp/site if present, then run
#                                            # python benchmarks/gpu_check.py [OPTIONS]
#
# The wheels are the pure-Python packages a stock CUDA image with torch, lightning, timm, torchmetrics,
# pyarrow and scipy lacks: sacred (and what it needs), open_clip_torch, ftfy, and setuptools<81 (sacred
# imports pkg_resources).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=(sacred==0.8.7 docopt-ng jsonpickle munch GitPython gitdb smmap open_clip_torch==3.3.0 ftfy wcwidth
        "setuptools<81")

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    mkdir -p .whl
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
    ls .whl
    exit 0
fi

if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_check.py "$@"
