#!/usr/bin/env bash
# The GPU check of issue 39, one prepared script for the lent GPU machine (none is lent to this project today).
#
#   bash bench/device_check.sh            # on the GPU machine, from the repository root: under 10 minutes
#   PY=.venv/bin/python DTYPES=float32 FAMILIES=smolvlm FRAMES=2 TESTS=tests/test_half_precision.py \
#       bash bench/device_check.sh
#                                         # the same on a CPU, to test the script (what CI-less sessions run)
#
# 1. the tests that exercise the model and the cache on the device (STREAMER_TEST_DEVICE=cuda: the cache's tensor
#    functions in bfloat16, sessions, batching, the pipeline's prepared chunks), 4 minutes at most;
# 2. the real-size benchmark (bench/bench_real_models.py) in bfloat16 on the device: SmolVLM2-256M,
#    LLaVA-OneVision-0.5B and Qwen2.5-VL-3B layouts, 5 minutes at most.
# Results go to $OUT (the device tool's folder) or bench/results/device/: tests.log, real_models.log,
# real_models.json. The GPU image has torch but an older transformers: the pinned wheels this project needs there
# travel in .whl/ (docs/live_cpu.md says how to fetch them) and are installed to /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/device}
PY=${PY:-python3}
DTYPES=${DTYPES:-bfloat16}
FAMILIES=${FAMILIES:-smolvlm,llava,qwen}
FRAMES=${FRAMES:-8}
TESTS=${TESTS:-tests/test_half_precision.py tests/test_batching.py tests/test_session.py tests/test_speed.py tests/test_pipeline.py}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
DEVICE=$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
export STREAMER_TEST_DEVICE=$DEVICE PYTHONUNBUFFERED=1
echo "device: $DEVICE; $($PY -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')" | tee "$OUT/tests.log"
# shellcheck disable=SC2086
timeout 240 $PY -m pytest -q -p no:cacheprovider -x $TESTS 2>&1 | tail -30 | tee -a "$OUT/tests.log"
tests=${PIPESTATUS[0]}
timeout 300 $PY bench/bench_real_models.py --device "$DEVICE" --dtypes "$DTYPES" --families "$FAMILIES" \
    --frames "$FRAMES" 2>&1 | grep -v "it/s\]" | tee "$OUT/real_models.log"
bench=${PIPESTATUS[0]}
cp bench/results/real_models.json "$OUT/" 2>/dev/null
echo "tests exit $tests, benchmark exit $bench" | tee -a "$OUT/tests.log"
[ "$tests" = 0 ] && [ "$bench" = 0 ]
