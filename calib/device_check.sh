#!/usr/bin/env bash
# One prepared GPU check (README, "GPU checks"): engine parity tests
# (CUDA FP16 with and without CUDA graphs against FP32; TensorRT where installed) and the engine
# benchmark at batch 1, 8 and 64, written under $OUT. Needs no MediaPipe or PyAV. Wheels the
# device's Python lacks (safetensors, rich, ...) may be carried in .whl/ and are installed first.
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 RTANIM_CACHE=/tmp/rtanim-cache COLUMNS=160
device=$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"; } | tee "$OUT/device.txt"
python3 -m pytest -q -rs tests/test_models.py tests/test_engines.py tests/test_refine.py tests/test_refine_engines.py 2>&1 | tee "$OUT/tests.log"
python3 -m cli bench --engines --device "$device" --models lite,lite+flow,ganimation,ganimation+flow \
  --batches "${BATCHES:-1,8,64}" --iters "${ITERS:-50}" 2>&1 | tee "$OUT/bench_engines.txt"
