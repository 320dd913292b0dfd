#!/usr/bin/env bash
# One prepared training run for a device session (issue 7, MODELS.md "How to continue training").
#
# Trains the GPU default (ganimation+flow) and the CPU default (lite+flow) side by side on the one
# GPU, each continuing from the newest weights it has: the shipped ones (rtanim/assets); while none
# ship, a flow-stage pretraining run comes first, continuing the CPU-made start in train/init/
# where one exists. Each run is bounded in time and stopped with SIGINT, on which the trainer
# writes a checkpoint. The EMA generators are exported as FP16 safetensors under $OUT (split into
# pieces under 15 MiB: $OUT returns at most 16 MiB per file; join with `cat NAME.part* > NAME`),
# with the runs' logs in one archive.
#
# Carry the shard: `python -m train.default_data` writes .data/default.safetensors. Needs no
# PyAV or MediaPipe. Seconds per stage: GAN_S (adversarial), FLOW_S (pretraining, while nothing
# ships). Evaluate the results on a CPU machine with `rtanim eval` (MediaPipe) before
# shipping them.
set -uo pipefail
OUT=${OUT:-out}
DATA=${DATA:-.data/default.safetensors}
GAN_S=${GAN_S:-330}
FLOW_S=${FLOW_S:-60}
BATCH=${BATCH:-25}
RUNS=${RUNS:-/tmp/rtanim-runs}
mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ ! -e "$DATA" ]; then echo "error: $DATA: no shard (python -m train.default_data, then carry it)"; exit 2; fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"; } \
  | tee "$RUNS/device.txt"

shipped_weights() {  # the packaged weights of model $1, or nothing
  [ -f "rtanim/assets/$1.safetensors" ] && echo "rtanim/assets/$1.safetensors"
}

train_model() {  # name arch
  local name=$1 arch=$2 init pre=""
  init=$(shipped_weights "$name")
  if [ -z "$init" ]; then  # nothing shipped yet: flow pretraining first, from train/init/ when it holds a start
    [ -f "train/init/$name.safetensors" ] && pre="train/init/$name.safetensors"
    echo "[$name] nothing shipped: flow pretraining for ${FLOW_S}s from ${pre:-scratch}"
    timeout --signal=INT "$FLOW_S" python3 -m train --data "$DATA" --out "$RUNS/$name-flow" --arch "$arch" --flow \
      --steps 10000000 --batch "$BATCH" --set stage=flow --set "init=$pre" --set lr_g=5e-4 --set decay_start=1 \
      --set ckpt_every=1000 --set sample_every=1000000 >"$RUNS/$name-flow.log" 2>&1
    init="$RUNS/$name-flow/generator.safetensors"
    [ -f "$init" ] || { echo "[$name] the flow run saved nothing: adversarial training from ${pre:-scratch}"; init=$pre; }
  fi
  echo "[$name] adversarial training for ${GAN_S}s from $init"
  local t0=$SECONDS rc amp=true
  for attempt in 1 2; do  # a run that fails early (bf16 trouble, say) is retried once in FP32
    rm -rf "${RUNS:?}/$name"
    timeout --signal=INT "$((GAN_S - (SECONDS - t0)))" python3 -m train --data "$DATA" --out "$RUNS/$name" \
      --arch "$arch" --flow --steps 10000000 --batch "$BATCH" --set "init=$init" --set decay_start=1 \
      --set ckpt_every=2000 --set sample_every=2000 --set amp=$amp >>"$RUNS/$name.log" 2>&1
    rc=$?
    echo "[$name] attempt $attempt (amp=$amp): exit $rc after $((SECONDS - t0))s (124/130 = stopped on time)"
    if [ $rc -eq 0 ] || [ $rc -eq 124 ] || [ $rc -eq 130 ] || [ $((SECONDS - t0)) -gt $((GAN_S / 2)) ]; then break; fi
    amp=false
  done
  python3 -m cli export --model "$RUNS/$name/generator.safetensors" --format safetensors --precision fp16 \
    -o "$RUNS/$name.safetensors" >>"$RUNS/$name.log" 2>&1 || { echo "[$name] export failed"; return 1; }
  python3 - "$RUNS/$name.safetensors" <<'EOF'
import json, sys
from rtanim.models.ganimation import load_checkpoint
print(sys.argv[1], json.loads(load_checkpoint(sys.argv[1]).extra.get("training", "{}")))
EOF
  split -b 15M -d "$RUNS/$name.safetensors" "$OUT/$name.safetensors.part"
}

train_model ganimation+flow ganimation &
gan=$!
train_model lite+flow lite &
lite=$!
status=0
wait "$gan" || status=1
wait "$lite" || status=1
tail -n 3 "$RUNS"/*.log
tar -czf "$OUT/runs.tar.gz" -C "$RUNS" --exclude='*.pt' --exclude='*.safetensors' --exclude='checkpoints' --exclude='tb' . 2>/dev/null
ls -l "$OUT"
exit $status
