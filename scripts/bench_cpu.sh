#!/usr/bin/env bash
# The CPU benchmark set behind results/bench/cpu/ (issue 8). Run it on an otherwise idle machine: every
# number is a wall time. About 20-30 minutes on 2 cores. Extra arguments go to every `research bench attention`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
ALL=$(python -c "import research.attention as a; print(','.join(a.names()))")
# 1. every variant, 256..16384 tokens, B1 H4 D64 fp32; points over 8 GiB of compiled memory are skipped
research bench attention --variants "$ALL" --lengths 256,512,1024,2048,4096,8192,16384 --repeats 3 "$@"
# 2. causal chunked forms vs their bidirectional selves
research bench attention --variants linear,performer,retention,gla,based --lengths 1024,4096,16384 --causal \
  --repeats 3 --name attention_causal "$@"
# 3. train step: remat policies (time vs compiled memory) and depth (compile time of the scanned layers)
CFG="experiments/listops.py:data.num_train=2000,data.num_val=100,data.num_test=100,model.d_model=128,model.mlp_dim=512"
research bench train --config "$CFG" --name train_remat --steps 10 \
  --set "model.remat_policy='none'" --set "model.remat_policy='dots'" --set "model.remat_policy='full'"
research bench train --config "$CFG" --name train_depth --steps 5 \
  --set model.num_layers=2 --set model.num_layers=8 --set model.num_layers=32
research bench train --config "$CFG" --name train_unroll --steps 5 \
  --set model.num_layers=2,model.scan_unroll=2 --set model.num_layers=8,model.scan_unroll=8 \
  --set model.num_layers=32,model.scan_unroll=32
# 4. persistent compilation cache: the same train benchmark cold, then warm, in fresh processes
cache=$(mktemp -d)
research --compile-cache "$cache" bench train --config "$CFG" --name train_cache_cold --steps 3
research --compile-cache "$cache" bench train --config "$CFG" --name train_cache_warm --steps 3
rm -rf "$cache"
