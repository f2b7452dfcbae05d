#!/usr/bin/env bash
# The multi-GPU scaling run (bench.scaling) in one device-tool call on a machine of 2 or more
# GPUs (nvidia-h200-x2, -x4): the GPU job on 1, 2 (and 4) ranks over the same chunks of the
# two benchmark clips, efficiency against one rank, and the host's codec rate for reference.
#   Carried: .carry/ffbin/ffmpeg.xz (imageio-ffmpeg 0.6.0's FFmpeg 7.0.2, xz-compressed).
#   NVLink multicast stays off (bench/device/multi_gpu.sh): the job uses no collectives beyond
#   MPI's small messages, so it has nothing to gain from it, and the device notes require it off.
#   Usage: bench/device/scaling.sh RANK_COUNTS SECONDS [bench.scaling options...]
#   e.g.   bench/device/scaling.sh 1,2 420 --compile default
#          bench/device/scaling.sh 1,2,4 180 --clip 1080p_90s   (4 GPUs need more than 15 chunks)
set -u
counts="${1:-1,2}" seconds="${2:-420}"
shift 2 || true
out="${OUT:-/tmp/scaling-out}"
mkdir -p "$out"
. bench/device/multi_gpu.sh
export PYTHONUNBUFFERED=1 RESTYLE_FFMPEG=/tmp/ffmpeg
. bench/device/ffmpeg.sh || exit 1
nvidia-smi --query-gpu=index,name --format=csv,noheader; nproc
timeout "$seconds" python3 -m bench.scaling --device cuda --rank-counts "$counts" "$@" \
  --out "$out/scaling.json" >/dev/null 2>"$out/scaling.log"
echo "scaling rc $?"
grep '\[bench\]' "$out/scaling.log" | tail -n 8
