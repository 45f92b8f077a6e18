#!/usr/bin/env bash
# A short device call (about 4 minutes): does colour input teach H&E nuclei better than the grey
# haematoxylin plane the shipped model reads? Two width-16 networks from scratch, side by side on
# the one GPU, the same 70 H&E training images, batches, steps of time and seed; one reads the
# image's R, G and B (each normalised on its own), the other the haematoxylin plane
# (docs/model.md, "The second lent GPU").
#
# Here, once: python benchmarks/gpu_train.py pack --out gpu/dsb2018.npz
#             python benchmarks/gpu_train.py lists gpu/dsb2018.npz --kind he   # 4 s
#   gpu/he_train.txt (70 H&E images of the training split), gpu/he_val.txt (the 5 H&E images of the
#   validation split and 15 of the training split, held out), gpu/he_all.txt (both).
# On the device, with `carry: ["gpu"]`:  bash benchmarks/gpu_he_colour.sh
# Back here: rgb.log, rgb.safetensors, grey.log, grey.safetensors; score both on the 20 held-out
# images with `napari-unet-loop evaluate ... --errors` (then tune on them, for each its best).
set -u
: "${OUT:?OUT must name the folder whose files come back}"
DEVICE=${DEVICE:-cuda}
MINUTES=${MINUTES:-3}
BATCH=${BATCH:-64}
export PYTHONUNBUFFERED=1 PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
COMMON="--from scratch --width 16 --patch 256 --batch $BATCH --lr 2e-3 --include gpu/he_all.txt
 --val-list gpu/he_val.txt --intensity 0.7 --blur 1.0 --select-by loss --val-every 30 --seed 5"
"$PY" benchmarks/gpu_train.py run gpu/dsb2018.npz --out "$OUT" --device "$DEVICE" --minutes "$MINUTES" \
    --keep 2 --no-score \
    --variant "rgb=$COMMON --in-channels 3 --modality none" \
    --variant "grey=$COMMON --modality he"
