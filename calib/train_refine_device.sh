#!/usr/bin/env bash
# One GPU call for the CPU default (`refine`, issue 12): two training runs side by side on the one
# GPU, each fed by 7 CPU loader workers, then the CUDA FP16 / TensorRT checks of the refine graph.
# Prepared here (MODELS.md, "Training `refine` on a GPU"):
#   python calib/pack_refine_data.py --data .data/talk .data/stills -o .gpu/refine_data.tar --max-mb 44
#   cp CHECKPOINT .gpu/g1.safetensors        # what run g1 continues (g2 continues train/init/refine.safetensors)
#   run(command="bash calib/train_refine_device.sh", carry=[".gpu"], timeout_s=600)
# Other recipes without editing: G1_INIT / G2_INIT (checkpoints) and G1_ARGS / G2_ARGS (extra trainer
# options), e.g. G1_ARGS="--adv 0.003" G2_INIT=train/init/refine_avg.safetensors bash calib/train_refine_device.sh;
# SNAP=SECONDS also brings back each run's weights at that interval, so a run that drifts can be judged early.
# Writes to $OUT: device.txt, g1.log, g2.log, g1.safetensors, g2.safetensors (FP16, with their
# training totals), tests.log and runs.tgz (metrics, data.json, the last sample grids). The packed frames
# hold the training people only, so the runs use --held-out 0.
set -uo pipefail
OUT=${OUT:-out}
MIN=${MIN:-7}
DEVICE=${DEVICE:-cuda}   # DEVICE=cpu WORKERS=1 MIN=0.5: a dry run of this script on a CPU machine
WORKERS=${WORKERS:-7}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 RTANIM_CACHE=/tmp/rtanim-cache
DATA=/tmp/refine_data
mkdir -p $DATA && tar xf .gpu/refine_data.tar -C $DATA || { echo "no packed data in .gpu/" >&2; exit 2; }
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  nproc
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
  python3 -c "import tensorrt; print('tensorrt', tensorrt.__version__)" 2>&1 | tail -1
  cat $DATA/pack.json
} > "$OUT/device.txt" 2>&1
common=(--data $DATA --held-out 0 --device "$DEVICE" --workers "$WORKERS" --threads 1 --basis-warp 0.65 --paint-mask
        --mirror 0.5 --ema 0.999 --paint-keep 150 --paint-keep-stretch 1.0 --minutes "$MIN" --save-every 120)
G1_INIT=${G1_INIT:-.gpu/g1.safetensors}
G2_INIT=${G2_INIT:-train/init/refine.safetensors}
read -r -a g1_args <<< "${G1_ARGS---closing 0.3}"
read -r -a g2_args <<< "${G2_ARGS-}"
python3 -m train.refine_train "${common[@]}" --run /tmp/g1 --init "$G1_INIT" "${g1_args[@]}" --seed 0 \
  > "$OUT/g1.log" 2>&1 &
python3 -m train.refine_train "${common[@]}" --run /tmp/g2 --init "$G2_INIT" "${g2_args[@]}" --seed 1 \
  > "$OUT/g2.log" 2>&1 &
runs=$(jobs -p)
if [ "${SNAP:-0}" -gt 0 ]; then  # SNAP=120: also bring back each run's weights every 120 s (g1_snap1, ...)
  ( n=0; while sleep "$SNAP"; do n=$((n + 1))
      for r in g1 g2; do cp /tmp/$r/refine.safetensors "$OUT/${r}_snap$n.safetensors" 2>/dev/null; done; done ) &
  snaps=$!
fi
wait $runs
[ -n "${snaps-}" ] && kill "$snaps"
timeout 100 python3 -m pytest -q -rs tests/test_refine.py tests/test_engines.py -k "cuda or tensorrt or fp16" \
  > "$OUT/tests.log" 2>&1
for r in g1 g2; do
  cp /tmp/$r/refine.safetensors "$OUT/$r.safetensors" 2>/dev/null
done
# metrics, data mix and the last sample grid of each run (all grids came to 36 MB: over the 16 MiB a file may bring back)
tar czf "$OUT/runs.tgz" -C /tmp g1/metrics.jsonl g1/data.json g1/samples/last.png g2/metrics.jsonl g2/data.json \
  g2/samples/last.png 2>/dev/null
ls -la "$OUT"
