#!/usr/bin/env bash
# The GPU job against the host's x264 rate at several chunks-in-flight counts (and, with
# CODECS, several chunk codecs), in one device-tool call (one H200, 16 cores):
# bench.stylize_job once per setting, each with its own host rates measured in the same run,
# into $OUT/stylize_job_encoders_N.json (with CODECS: $OUT/stylize_job_encoders_N_CODEC.json).
#   Carried: .carry/ffbin/ffmpeg.xz (imageio-ffmpeg 0.6.0's FFmpeg 7.0.2, xz-compressed).
#   Usage: [CODECS="utvideo rawvideo"] bench/device/job_sweep.sh "ENCODER_COUNTS" SECONDS_EACH
#          [bench.stylize_job options...]
#   e.g.   bench/device/job_sweep.sh "4 8" 100 --clip 1080p --compile default
set -u
counts="${1:-4 8}" seconds="${2:-100}"
shift 2 || true
out="${OUT:-/tmp/sweep-out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 RESTYLE_FFMPEG=/tmp/ffmpeg
. bench/device/ffmpeg.sh || exit 1
nproc
for encoders in $counts; do
  for codec in ${CODECS:-default}; do
    name="stylize_job_encoders_$encoders"
    codec_opts=()
    if [ "$codec" != default ]; then name="${name}_$codec"; codec_opts=(--chunk-codec "$codec"); fi
    timeout "$seconds" python3 -m bench.stylize_job --device cuda --encoders "$encoders" \
      "${codec_opts[@]}" --model-fps-json docs/model_fps.json "$@" --out "$out/$name.json" \
      >"$out/$name.log" 2>&1
    echo "$name rc $?"
    grep '\[bench\]' "$out/$name.log" | tail -n 2 | cut -c1-400
  done
done
