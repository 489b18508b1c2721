#!/usr/bin/env bash
# Run every analysis end to end on one model from the CLI, with small inputs, and time each.
# Usage: scripts/every_analysis.sh MODEL DB [IWB]
set -uo pipefail
model=${1:-smollm2-135m}
db=${2:-/tmp/every-analysis.duckdb}
iwb=${3:-iwb}
prompt="The Eiffel Tower is located in the city of"
run() {
  local name=$1; shift
  local start=$(date +%s.%N)
  if out=$("$iwb" run "$name" --model "$model" --db "$db" --no-chart "$@" 2>&1); then status=ok; else status="FAILED: $(echo "$out" | tail -1)"; fi
  printf '%-22s %6.1f s  %s\n' "$name" "$(echo "$(date +%s.%N) - $start" | bc)" "$status"
}
run logit-lens --prompt "$prompt" --param target=" Paris"
run causal-trace --prompt "$prompt" --param subject="Eiffel Tower" --param samples=3 --param kinds=resid
run truncation --n-docs 4 --max-tokens 48 --param k_max=4
run layer-interventions --n-docs 4 --max-tokens 48
run attention-locality --n-docs 4 --max-tokens 48
run component-norms --n-docs 4 --max-tokens 48
run neuron-classes --param layers=0,1
run first-layer-heads --n-docs 4 --max-tokens 128
run contextual-neurons --n-docs 4 --max-tokens 128
run fact-lookup --param layer_stride=6 --param intervention_entities=8 --param folds=3
