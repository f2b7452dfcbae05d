#!/usr/bin/env bash
# The GPU job against the host's x264 rate under several settings, in one device-tool call:
# bench.stylize_job once per VARIANT, each with its own host rates measured in the same run,
# into $OUT/stylize_job_<name>.json (its log's last lines are printed; the device tool returns
# at most 8 files, so keep to 8 variants).
#   VARIANTS: space-separated "name:options", the options separated by commas, added to the
#   common options after SECONDS_EACH; e.g. "chunks1:--chunk-seconds,1 ranks2:--ranks,2".
#   Carried: .carry/ffbin/ffmpeg.xz (imageio-ffmpeg 0.6.0's FFmpeg 7.0.2, xz-compressed).
#   Usage: [DEVICE=cuda] [PYTHON=python3] bench/device/job_variants.sh SECONDS_EACH "VARIANTS"
#          [common bench.stylize_job options...]
#   e.g.   bench/device/job_variants.sh 110 "base: chunks1:--chunk-seconds,1" \
#            --compile reduce-overhead --rate-frames 300 --clip 1080p
set -u
seconds="${1:-110}" variants="${2:-base:}"
shift 2 || true
out="${OUT:-/tmp/variants-out}"
mkdir -p "$out" /tmp/variant-logs
export PYTHONUNBUFFERED=1 RESTYLE_FFMPEG=/tmp/ffmpeg
. bench/device/ffmpeg.sh || exit 1
nproc
for variant in $variants; do
  name="${variant%%:*}" options="${variant#*:}"
  log="/tmp/variant-logs/$name.log"
  # shellcheck disable=SC2086  # the options are meant to split into words
  timeout "$seconds" "${PYTHON:-python3}" -m bench.stylize_job --device "${DEVICE:-cuda}" \
    --model-fps-json docs/model_fps.json "$@" ${options//,/ } \
    --out "$out/stylize_job_$name.json" >"$log" 2>&1
  echo "$name rc $?"
  grep '\[bench\]' "$log" | tail -n 2 | cut -c1-400
done
