#!/usr/bin/env bash
# One device call for a session that is lent a GPU: the training-speed check, then the
# default-model candidates side by side (docs/model.md, "The first lent GPU").
#
# Here, once:   python benchmarks/gpu_train.py pack --out gpu/dsb2018.npz
# On the device, with `carry: ["gpu"]` and timeout_s 600 (the whole call takes about 8.5 minutes):
#               bash benchmarks/gpu_session.sh
# Back here: bench_train.txt, the 3 variants' NAME.log, and NAME.safetensors and NAME.json of the first
# two (8 files: a call returns 8 at most, so send the command's own output to output_tail, not $OUT;
# the second lent GPU ran it with --keep 3 and a log in $OUT, and w16's files stayed behind).
# Score the models on the test split here with `napari-unet-loop evaluate ... --by-kind`.
#
# Dry run on a CPU, with the device's Python imitated (the package's dependencies it lacks fail to
# import: benchmarks/device_python/sitecustomize.py), about 5 minutes:
#   OUT=/tmp/gs DEVICE=cpu MINUTES=0.3 STEPS=2 BATCH=4 PYTHON=.venv/bin/python \
#       PYTHONPATH=benchmarks/device_python bash benchmarks/gpu_session.sh
set -u
: "${OUT:?OUT must name the folder whose files come back}"
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-5.5}
STEPS=${STEPS:-20}
BATCH=${BATCH:-64}
export PYTHONUNBUFFERED=1 PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.used --format=csv,noheader

# 1. Do the batches or the network set the pace? (about a minute)
timeout 120 "$PY" benchmarks/bench_train.py --device "$DEVICE" --patch 256 --batch "$BATCH" --steps "$STEPS" \
    --images 40 --npz gpu/dsb2018.npz 2>&1 | tee "$OUT/bench_train.txt"

# 2. The shipped model continued at 256 px patches (learning rates 1e-3 and 3e-4), beside a width-16
#    network from scratch; validation every 90 s (the first GPU run validated every 45 s, the CPU
#    scoring 30 images each time).
COMMON="--balance-kinds he=0.22,brightfield=0.12 --intensity 0.7 --blur 1.0 --select-by loss --checkpoint-every 60 --val-every 90"
"$PY" benchmarks/gpu_train.py run gpu/dsb2018.npz --out "$OUT" --device "$DEVICE" --minutes "$MINUTES" --keep 2 \
    --variant "cont=--from default --anchor 0 --update-norm --patch 256 --batch $((BATCH / 2)) --lr 1e-3 $COMMON --seed 7" \
    --variant "cont3=--from default --anchor 0 --update-norm --patch 256 --batch $((BATCH / 2)) --lr 3e-4 $COMMON --seed 9" \
    --variant "w16=--from scratch --width 16 --patch 256 --batch $BATCH --lr 2e-3 $COMMON --seed 8"
