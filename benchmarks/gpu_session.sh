#!/usr/bin/env bash
# Everything issue #15 measures on a GPU, in as few calls as a short GPU lease allows.
#
#   bash benchmarks/gpu_session.sh check     # the CUDA tests, cuda_study.py's host and shapes parts, bench_cuda.py
#   bash benchmarks/gpu_session.sh xgboost   # XGBoost device="cuda": tests and bench_gbdt_gpu.py
#   bash benchmarks/gpu_session.sh study     # cuda_study.py (host overhead, launch shapes), tests
#   bash benchmarks/gpu_session.sh tests     # the CUDA tests and lossdsl.jax's tests on the GPU
#   bash benchmarks/gpu_session.sh bench     # bench_cuda.py --repeat 5
#   bash benchmarks/gpu_session.sh calls     # cuda_study.py --parts calls (what a public call launches)
#
# Several modes run in one call, in the order given: bash benchmarks/gpu_session.sh tests bench
#
# Run from the repository root on a machine with an NVIDIA GPU, numba-cuda, CuPy and PyTorch
# with CUDA. Missing pure-Python dependencies can be given as wheels in $WHEELS (lark); an
# XGBoost that is not installed can be given as $XGBOOST_TAR (its package without
# lib/libxgboost.so) plus the library xz-compressed and split in $XGBOOST_PARTS (a glob of the
# parts in order), as when the wheel is too large to copy in one piece. Logs go to $OUT.
set -u
OUT=${OUT:-/tmp/lossdsl-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
SITE=/tmp/lossdsl-site
mkdir -p "$SITE"
if ls ${WHEELS:-/nonexistent}/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$WHEELS"/*.whl || exit 1
fi
export PYTHONPATH="$PWD:$SITE"
export LOSSDSL_FULL_SWEEPS=1
step() {  # step NAME TIMEOUT COMMAND...: run with a time limit, log under $OUT, report rc
    local name=$1 limit=$2
    shift 2
    local began=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "== $name: rc=$rc in $((SECONDS - began)) s"
    tail -n "${TAIL:-15}" "$OUT/$name.log"
}
pytest_args=(-p no:cacheprovider -o addopts= -q -rfE --tb=short)
cuda_tests=(tests/backend/test_cuda.py tests/integrations/test_integrations_torch.py
            tests/test_ignore_and_reductions.py tests/test_groups.py tests/test_class_vectors.py)

card() {
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
        --format=csv | tee "$OUT/card.txt"
    python3 -c "from importlib.metadata import version as v; print(*(f'{p} {v(p)}' for p in \
('numba', 'numba-cuda', 'cupy-cuda13x', 'torch', 'jax')))" | tee -a "$OUT/card.txt"
}

for mode in "${@:-check}"; do
case "$mode" in
check)
    card
    TAIL=25 step test_cuda 240 python3 -m pytest "${pytest_args[@]}" -n 14 --dist load \
        "${cuda_tests[@]}"
    TAIL=0 step study_host 90 python3 benchmarks/cuda_study.py --parts host
    TAIL=0 step study_shapes 90 python3 benchmarks/cuda_study.py --parts shapes --unrolls 2,4 \
        --blocks 8,32
    TAIL=40 step bench_cuda 270 python3 benchmarks/bench_cuda.py --repeat 10
    ;;
tests)
    card
    TAIL=25 step test_cuda 200 python3 -m pytest "${pytest_args[@]}" -n 14 --dist load \
        "${cuda_tests[@]}"
    # JAX takes 75% of the GPU's memory per process unless told otherwise
    XLA_PYTHON_CLIENT_PREALLOCATE=false TAIL=15 step test_jax_gpu 100 python3 -c \
        "import jax, sys, pytest; print(jax.devices()); sys.exit(pytest.main(['-p', 'no:cacheprovider', '-o', 'addopts=', '-q', '-rfE', '--tb=short', '-n', '8', 'tests/integrations/test_jax.py']))"
    ;;
bench)
    TAIL=30 step bench_cuda 150 python3 benchmarks/bench_cuda.py --repeat 5
    ;;
calls)
    TAIL=0 step study_calls 150 python3 benchmarks/cuda_study.py --parts calls --repeat 10
    ;;
study)
    card
    TAIL=45 step study_host 120 python3 benchmarks/cuda_study.py --parts host
    TAIL=20 step study_reductions 90 python3 benchmarks/cuda_study.py --parts reductions
    TAIL=80 step study_shapes 180 python3 benchmarks/cuda_study.py --parts shapes
    TAIL=25 step test_cuda 240 python3 -m pytest "${pytest_args[@]}" -n 14 --dist load \
        "${cuda_tests[@]}"
    ;;
xgboost)
    if ! python3 -c "import xgboost" 2>/dev/null; then
        tar xf "$XGBOOST_TAR" -C "$SITE" || exit 1
        cat $XGBOOST_PARTS | xz -d >"$SITE/xgboost/lib/libxgboost.so" || exit 1
    fi
    python3 -c "import xgboost; print('xgboost', xgboost.__version__)" | tee -a "$OUT/card.txt"
    TAIL=25 step test_gpu_boosting 200 python3 -m pytest "${pytest_args[@]}" -n 0 \
        tests/integrations/test_gpu_boosting.py
    TAIL=30 step bench_gbdt_gpu 300 python3 benchmarks/bench_gbdt_gpu.py --rows 1000000 \
        --rounds 30 --repeat 2
    ;;
*)
    echo "usage: $0 check|study|xgboost|tests|bench|calls ..." >&2
    exit 2
    ;;
esac
done
