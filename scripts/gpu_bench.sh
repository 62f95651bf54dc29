#!/usr/bin/env bash
# Issue 8's accelerator checks in one prepared script (writes results/bench/<device>/):
#   1. bf16 attention vs length for softmax (cuDNN flash attention when XLA picks it: each row's
#      `custom_calls` lists `__cudnn$fmha...` when it is really used) and the linear family, with
#      achieved HBM bandwidth as a fraction of peak and the crossover length vs softmax;
#   2. MFU of a 12-layer d768 encoder (12 heads, MLP 3072, bf16) at 512 and 4,096 tokens.
# Usage: bash scripts/gpu_bench.sh   (about 10 minutes on one H100)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
python -c "import jax; assert jax.devices()[0].platform != 'cpu'" 2>/dev/null \
  || { echo "error: no GPU/TPU visible to JAX; on a CUDA machine: .venv/bin/pip install \"jax[cuda12]==$(python -c 'import jax; print(jax.__version__)')\"" >&2; exit 2; }
research bench attention --variants softmax,linear,performer,local,retention,gla,based \
  --lengths 512,1024,2048,4096,8192,16384,32768 --dtype bfloat16 --batch 4 --heads 12 --head-dim 64 \
  --repeats 10 --warmup 2 --max-memory-gb 60 --name attention_bf16
BIG="model.d_model=768,model.num_heads=12,model.num_layers=12,model.mlp_dim=3072,model.dtype='bfloat16'"
DATA="data.num_train=512,data.num_val=64,data.num_test=64,data.max_depth=10,data.max_args=10"
research bench train --config "experiments/listops.py:$BIG,$DATA,train.batch_size=32" --name train_mfu_512 \
  --steps 20 --set "data.min_length=400,data.max_length=511,attention='softmax'" \
  --set "data.min_length=400,data.max_length=511,attention='linear'"
research bench train --config "experiments/listops.py:$BIG,$DATA,train.batch_size=8" --name train_mfu_4096 \
  --steps 10 --set "data.min_length=3500,data.max_length=4095,attention='softmax'" \
  --set "data.min_length=3500,data.max_length=4095,attention='linear'"
