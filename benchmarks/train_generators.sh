#!/usr/bin/env bash
# The generators behind benchmarks/results/cbis_synthetic.* (64 px, CBIS-DDSM training split).
# usage: benchmarks/train_generators.sh GENS [DATA]    then: python benchmarks/cbis_synthetic.py --gens GENS
# A generator whose generator.pt exists is kept (re-running continues where an earlier run stopped).
set -euo pipefail
GENS=${1:?folder for the generators}
DATA=${2:-../shared/data/cbis-ddsm-masses}
common=(--data "$DATA" --image-size 64 --width 32)
gen() {  # gen NAME OPTIONS...
  local out="$GENS/$1"; shift
  [ -f "$out/generator.pt" ] || privmed synth train "${common[@]}" "$@" --out "$out"
}
gen privmed_dp_eps1 --epsilon 1 --epochs 25 --batch-size 256 --discriminator scatter
gen dp1_da --epsilon 1 --epochs 25 --batch-size 256 --discriminator scatter --diff-augment
gen privmed_dp_eps10 --epsilon 10 --epochs 50 --batch-size 128 --discriminator scatter
gen pixel_dp_eps10 --epsilon 10 --epochs 50 --batch-size 128 --disc-width 16
gen privmed_nondp --epochs 80 --batch-size 64
for seed in 0 1 2; do  # non-private, DiffAugment + minibatch standard deviation, three seeds
  gen "da_s$seed" --epochs 60 --batch-size 64 --diff-augment --minibatch-std --seed "$seed"
done
