#!/usr/bin/env bash
# The main job: the whole pipeline on the built-in tiny corpus, on CPU, with a short training budget.
#   corpus -> prepare -> tokenizer | Flow-VAE -> token + latent caches -> AR + speaker encoder | flow matching
#   -> clone every utterance of test-synth-en zero-shot and one-shot -> WER/SIM table
# Stages joined by "|" train side by side, one thread each (small models use 2 cores better that way).
# Safe to run again: every step keeps finished work (trained stages resume at their last checkpoint and
# stop at once when done, caches and generated wavs are skipped). Extra arguments go to every Hydra
# command (e.g. `paths.data_dir=/scratch/data`). Budgets: TOKENIZER_STEPS, VAE_STEPS, AR_STEPS, FM_STEPS.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
py=${SPEECH_VENV:-.venv}/bin/python
out=logs/pipeline_tiny
mkdir -p "$out"
export OMP_NUM_THREADS=1
start=$SECONDS

step() { printf '\n== [%s] %s (%d s so far)\n' "$(date +%H:%M:%S)" "$*" $((SECONDS - start)); }

# Runs two commands side by side, each logging to $out/<name>.log, prints their latest progress line every
# 30 s, and fails (naming the log) if either fails.
side_by_side() {
  local name1=$1 cmd1=$2 name2=$3 cmd2=$4 pids=() names=("$1" "$3") rc=0
  bash -c "$cmd1" >"$out/$name1.log" 2>&1 & pids+=($!)
  bash -c "$cmd2" >"$out/$name2.log" 2>&1 & pids+=($!)
  while kill -0 "${pids[0]}" 2>/dev/null || kill -0 "${pids[1]}" 2>/dev/null; do
    sleep 30
    for n in "$name1" "$name2"; do
      printf '   %-15s %s\n' "$n" "$(grep -E '^step [0-9]+/|it/s|wav/s' "$out/$n.log" | tail -n 1 | cut -c1-110)"
    done
  done
  for i in 0 1; do
    if ! wait "${pids[$i]}"; then
      echo "FAILED: ${names[$i]} (see $out/${names[$i]}.log)" >&2
      tail -n 20 "$out/${names[$i]}.log" >&2
      rc=1
    fi
  done
  return $rc
}

step "1/7 synthetic corpus"
"$py" scripts/make_synthetic_corpus.py data=synthetic_tiny "$@"
step "2/7 prepare cuts, BPE, batches"
"$py" scripts/prepare_data.py data=synthetic_tiny "$@"

step "3/7 train the audio tokenizer | the Flow-VAE"
side_by_side \
  tokenizer "$py train.py experiment=tokenizer_tiny trainer.max_steps=${TOKENIZER_STEPS:-600} $*" \
  flow_vae "$py train.py experiment=flow_vae_tiny trainer.max_steps=${VAE_STEPS:-2000} $*"

step "4/7 token cache | latent cache"
side_by_side \
  encode_tokens "$py scripts/encode_tokens.py ckpt=logs/tokenizer_tiny/checkpoints/last.ckpt progress=false $*" \
  encode_latents "OMP_NUM_THREADS=2 $py scripts/encode_latents.py kind=latents ckpt=logs/flow_vae_tiny/checkpoints/last.ckpt progress=false $*"

step "5/7 train the AR Transformer + speaker encoder | flow matching"
side_by_side \
  ar "$py train.py experiment=ar_tiny trainer.max_steps=${AR_STEPS:-800} data.datamodule.max_duration=20 $*" \
  flow_matching "$py train.py experiment=flow_matching_tiny trainer.max_steps=${FM_STEPS:-1200} $*"

step "6/7 clone test-synth-en zero-shot | one-shot"
meta=data/synthetic_tiny/test-synth-en/meta.lst
ar=logs/ar_tiny/checkpoints/last.ckpt
fm=logs/flow_matching_tiny/checkpoints/last.ckpt
# Generated wavs are kept per pair of checkpoints: after more training a rerun makes new ones.
gen="$out/$(cat "$ar" "$fm" | sha256sum | cut -c1-12)"
infer_cmd="$py infer.py ar_ckpt=$ar fm_ckpt=$fm meta=$meta progress=false"
side_by_side \
  zero_shot "$infer_cmd mode=zero_shot out_dir=$gen/zero_shot $*" \
  one_shot "$infer_cmd mode=one_shot out_dir=$gen/one_shot $*"

step "7/7 WER (pocketsphinx) and SIM (resemblyzer), zero-shot | one-shot"
eval_cmd="$py eval/seedtts_eval.py meta=$meta language=en progress=false"
side_by_side \
  eval_zero_shot "$eval_cmd gen_dir=$gen/zero_shot out_dir=$gen/eval/zero_shot ground_truth=true $*" \
  eval_one_shot "$eval_cmd gen_dir=$gen/one_shot out_dir=$gen/eval/one_shot ground_truth=false $*"
"$py" eval/compare_runs.py zero-shot="$gen/eval/zero_shot" one-shot="$gen/eval/one_shot" --out "$gen/results.md"
cp "$gen/results.md" "$out/results.md"
step "done: $out/results.md (wavs, per-utterance scores: $gen)"
