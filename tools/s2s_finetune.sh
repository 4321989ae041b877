#!/usr/bin/env bash
# Stage 2 (dialogues) of train_s2s.py from given weights, on a CPU: how runs F to K and the shipped
# model were continued between GPU calls (docs/experiments.md). Resumes: run the same
# command again after a kill and it continues from runs/s2s_cpu_$NAME's last good checkpoint.
#
#   NAME=j INIT=runs/s2s_cpu_i/s2s.safetensors NOISE=0.3 SHARE=0.15 THREADS=2 S2_MIN=95 LR=0.0005 \
#     EXTRA="--text_share 0.4 --text_word_dropout 0.15 --set train_s2s.batch_size=16 \
#            --set train_s2s.num_workers=1 --set train_s2s.eval_every_steps=400" bash tools/s2s_finetune.sh
#
# NAME     run folder runs/s2s_cpu_$NAME (its s2s.safetensors + s2s.json are exported at the end)
# INIT     weights to start from (.safetensors or a .pt checkpoint)
# NOISE    s2s.user_text_noise: share of user-text tokens replaced when read back (train on the
#          model's own imperfect transcript, not the true one)
# SHARE    sentence_share: stage-2 items that are single sentence clips (keeps hearing trained)
# THREADS  torch threads; S2_MIN minutes of stage 2; LR peak learning rate
# EXTRA    any further train_s2s.py arguments
set -euo pipefail
cd "$(dirname "$0")/.."
: "${NAME:?NAME=run name}" "${INIT:?INIT=weights to start from}"
NOISE=${NOISE:-0.3} SHARE=${SHARE:-0.15} THREADS=${THREADS:-2} S2_MIN=${S2_MIN:-30} LR=${LR:-0.0003}
DATA=${DATA:-data/synthetic} DIALOGUES=${DIALOGUES:-data/dialogues}
# shellcheck disable=SC2086  # EXTRA is a list of arguments
exec python3 train_s2s.py --config tiny --stage dialogue --init "$INIT" --resume \
  --codec_path checkpoints/codec.safetensors --speaker_path checkpoints/speaker_encoder.safetensors \
  --data_dir "$DATA" --dialogue_dir "$DIALOGUES" --out_dir "runs/s2s_cpu_$NAME" \
  --crop_s 10 --depth_fraction 0.25 --sentence_share "$SHARE" --lr "$LR" --threads "$THREADS" \
  --stage2_minutes "$S2_MIN" --set s2s.user_text_noise="$NOISE" --set train_s2s.threads="$THREADS" $EXTRA
