#!/usr/bin/env bash
# The teacher round measured for the README (#19): distil the shipped GPT-4o rewrites of vbench-train into the
# 135M rewriter, one DPO round on top, then evaluate on vbench-test (never trained on) against GPT-4o itself
# and the untrained base. Usage: bench/teacher_round.sh HOME [SFT_STEPS] [DPO_PROMPTS] [DPO_STEPS] [EVAL_LIMIT]
set -euo pipefail
export PROMPTLOOP_HOME="$1"
SFT_STEPS="${2:-64}"; DPO_PROMPTS="${3:-48}"; DPO_STEPS="${4:-12}"; EVAL_LIMIT="${5:-64}"
PL="${PL:-promptloop}"
here="$(cd "$(dirname "$0")/.." && pwd)"
t() { echo "== $(date +%T) $*" >&2; /usr/bin/time -f "   %e s" "$@"; }
t $PL init
t $PL teacher import --shipped gpt4o
t $PL collect sft --teacher gpt4o --round 0
t $PL data stats
t $PL train sft --round 0 --config "$here/learners/recipes/teacher_sft.yaml" --name teacher-sft --max-steps "$SFT_STEPS"
t $PL collect pairs --round 1 --model-version teacher-sft --limit "$DPO_PROMPTS"
t $PL train dpo --round 1 --parent teacher-sft --name teacher-sft-dpo --max-steps "$DPO_STEPS"
t $PL eval --bench vbench --limit "$EVAL_LIMIT" --redteam-limit 0 --system base --system public:gpt4o \
  --system teacher-sft --system teacher-sft-dpo --json > "$PROMPTLOOP_HOME/teacher_eval.json"
t $PL eval --bench vbench --limit "$EVAL_LIMIT" --redteam-limit 0 --system base --system public:gpt4o \
  --system teacher-sft --system teacher-sft-dpo
