#!/usr/bin/env bash
# The generators behind benchmarks/results/cbis_synthetic.* (64 px, CBIS-DDSM training split).
# usage: benchmarks/train_generators.sh GENS [DATA]    then: python benchmarks/cbis_synthetic.py --gens GENS
set -euo pipefail
GENS=${1:?folder for the generators}
DATA=${2:-../shared/data/cbis-ddsm-masses}
common=(--data "$DATA" --image-size 64 --width 32)
privmed synth train "${common[@]}" --epsilon 1 --epochs 25 --batch-size 256 --discriminator scatter --out "$GENS/privmed_dp_eps1"
privmed synth train "${common[@]}" --epsilon 1 --epochs 25 --batch-size 256 --discriminator scatter --diff-augment --out "$GENS/dp1_da"
privmed synth train "${common[@]}" --epsilon 10 --epochs 50 --batch-size 128 --discriminator scatter --out "$GENS/privmed_dp_eps10"
privmed synth train "${common[@]}" --epsilon 10 --epochs 50 --batch-size 128 --disc-width 16 --out "$GENS/pixel_dp_eps10"
privmed synth train "${common[@]}" --epochs 80 --batch-size 64 --out "$GENS/privmed_nondp"
for seed in 0 1 2; do  # non-private, DiffAugment + minibatch standard deviation, three seeds
  privmed synth train "${common[@]}" --epochs 60 --batch-size 64 --diff-augment --minibatch-std --seed "$seed" --out "$GENS/da_s$seed"
done
