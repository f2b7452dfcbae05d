#!/usr/bin/env bash
# NVLink multicast off in NCCL, PyTorch and NVSHMEM, which the multi-GPU device kinds require (a
# program that uses it can put the host's shared GPUs out of service); our jobs need no
# collectives beyond MPI's small messages, so they lose nothing. Every device script that runs
# on a machine of several GPUs sources this, so a new variable is added in one place:
#   . bench/device/multi_gpu.sh
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
