#!/bin/bash
# One lent GPU machine, one call: build the corpora on its CPUs, then train side by side on its GPU
#   - the codec's decoder with the GAN (train_codec_dac.py --decoder_only: the encoder and the
#     quantizer stay frozen, so codes and latents, and the S2S model trained on them, are unchanged),
#   - the S2S model, stage 1 (transcription) then stage 2 (dialogues), on the shipped codec.
# Everything is time-boxed to END_S seconds after the start; what it makes lands in $OUT_DIR:
# codec.safetensors/.json (fp16), s2s.NN.safetensors (fp16 shards of <= 15 MiB: the device tool
# returns files of at most 16 MiB; join them with tools/safetensors_shards.py) and small.tar.gz
# (logs, configs, validation curves, TensorBoard).
#
#   OUT_DIR=/tmp/out END_S=540 bash tools/device_train.sh            # the H100 run (README)
#   SMOKE=1 OUT_DIR=/tmp/out bash tools/device_train.sh               # a minute: every step, tiny sizes
#   TRAIN_CODEC=0 S1_END=0 S2S_INIT=runs/gpu_h100_1/s2s.safetensors ... # stage 2 only, all GPU time to it
# Knobs (environment): END_S, S1_END (stage 1 ends this many seconds after the start; 0 skips it),
# S2S_INIT (weights to start the S2S from; carry them), S2S_LR, AUGMENT (augment_strength, the
# loaders' CPU cost), ECHO (train on each batch N times: the 2026-11-25 run was loader-bound),
# TRAIN_CODEC (0: no codec run), N_DIAL (training dialogues to build), DEPTH_FRACTION (share of frames
# the depth transformer trains on), SENT_SHARE (stage 2's share of transcription sentences),
# UT_NOISE (s2s.user_text_noise: share of the user transcript read back replaced at random),
# S2S_WORKERS (the S2S loader's worker processes; default: the cores the codec run leaves),
# SENT_VOICE (share of sentence items given an agent voice; 0: none, "listening only"),
# TEXT_SHARE (stage 2's share of text-only dialogues: answering learnt from text, s2s_batching.TextDialogues),
# TEXT_DROPOUT (their requests' non-slot words dropped with this chance: cues, not whole phrasings),
# CROP (stage-2 crop in seconds, default 10; 16 lets the 250-frame attention window bind in training,
# so the model learns the sliding window it streams with: docs/experiments.md, "The attention window").
# CODEC_MODE (decoder: the GAN fine-tune of the shipped decoder above; full: a whole codec, encoder
# and quantizer included, from CODEC_INIT or from scratch, with HARMONICS harmonic oscillators
# (codec.harmonics, default 48: the pitch fix in docs/experiments.md, "The codec cannot play pitch") and the
# GAN from step GAN_START). New codes mean a new S2S, so a full run usually sets TRAIN_S2S=0 and
# gives the codec all the GPU time; a later call carries its codec and trains the S2S on it with
# S2S_CODEC=path/codec.safetensors.
#   CODEC_MODE=full TRAIN_S2S=0 OUT_DIR=$OUT END_S=540 bash tools/device_train.sh
set -u
START=$(date +%s)
OUT_DIR=${OUT_DIR:-${OUT:-runs/device_out}}
END_S=${END_S:-540}          # the whole script ends by then (the device call's limit is 600 s)
SMOKE=${SMOKE:-0}
TRAIN_CODEC=${TRAIN_CODEC:-1}
CODEC_MODE=${CODEC_MODE:-decoder}
CODEC_INIT=${CODEC_INIT:-}
HARMONICS=${HARMONICS:-48}
GAN_START=${GAN_START:-3000}
TRAIN_S2S=${TRAIN_S2S:-1}
S2S_CODEC=${S2S_CODEC:-checkpoints/codec.safetensors}
S2S_INIT=${S2S_INIT:-}
S2S_LR=${S2S_LR:-0.001}
AUGMENT=${AUGMENT:-1.0}
ECHO=${ECHO:-1}
DEPTH_FRACTION=${DEPTH_FRACTION:-1.0}
SENT_SHARE=${SENT_SHARE:-0.25}
UT_NOISE=${UT_NOISE:-0.3}
SENT_VOICE=${SENT_VOICE:-1.0}
TEXT_SHARE=${TEXT_SHARE:-0.0}
TEXT_DROPOUT=${TEXT_DROPOUT:-0.0}
CPUS=$(nproc)
S2S_WORKERS=${S2S_WORKERS:-$(( CPUS > 4 ? CPUS - 7 : 0 ))}
W=$(( CPUS > 4 ? CPUS / 2 : 1 ))   # workers per corpus builder while both run
mkdir -p "$OUT_DIR" runs/dev
LOG=runs/dev
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

left() { echo $(( END_S - ($(date +%s) - START) )); }
mins() { python3 -c "print(max(0.2, ($1) / 60))"; }
say() { echo "[$(( $(date +%s) - START )) s] $*"; }

if [ -d .whl ]; then  # packages the device image lacks (soundfile, soxr, librosa, espeakng-loader ...)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || exit 1
fi
python3 -c "import torch, soundfile, soxr, librosa, espeakng_loader, sentencepiece, tensorboard; \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')" || exit 1
say "cpus $CPUS"

if [ "$SMOKE" = 1 ]; then
  PER_VOICE=8; N_DIAL=16; N_HELD=4; CODEC_STEPS=30; S1_STEPS=20; S2_STEPS=20; S1_END=0; BATCH=4; CROP=6; GAN_START=10; CODEC_BATCH=4
else
  PER_VOICE=500; N_DIAL=${N_DIAL:-2000}; N_HELD=12; CODEC_STEPS=1000000; S1_STEPS=1000000; S2_STEPS=1000000
  S1_END=${S1_END:-250}; BATCH=32; CROP=${CROP:-10}; CODEC_BATCH=${CODEC_BATCH:-32}
fi

# --- corpora, both at once ------------------------------------------------------------------------
python3 prepare_speaker_data.py --synthetic --out data/synthetic --per_voice $PER_VOICE --workers $W \
  > $LOG/corpus.log 2>&1 || { tail -20 $LOG/corpus.log; exit 1; }
say "sentence corpus: $(wc -l < data/synthetic/train.jsonl) train clips"
DIAL=
[ "$TRAIN_S2S" = 1 ] && { python3 dialogue_corpus.py --out data/dialogues --train $N_DIAL --heldout $N_HELD --splits train heldout_val \
  --workers $(( CPUS > 4 ? CPUS - 6 : 1 )) --no_progress > $LOG/dialogues.log 2>&1 & DIAL=$!; }

# --- codec: GAN fine-tune of the decoder, or a whole codec, until the end --------------------------
CODEC=
if [ "$TRAIN_CODEC" = 1 ]; then
  # What both codec runs share: the discriminators' size, fp32, checkpoints and logs.
  CODEC_RUN=(python3 train_codec_dac.py --config tiny --data_dir data/synthetic --export "$OUT_DIR/codec.safetensors"
    --set discriminator.mpd_channels=16 --set discriminator.stft_channels=16
    --set "discriminator.stft_windows=[2048, 1024, 512]" --set train_codec.precision=fp32
    --set train_codec.threads=2 --set train_codec.max_steps=$CODEC_STEPS --set train_codec.save_every_steps=1000
    --set train_codec.eval_every_steps=1000 --set train_codec.log_every_steps=50)
  if [ "$CODEC_MODE" = full ]; then
    C_INIT=(); [ -n "$CODEC_INIT" ] && C_INIT=(--init "$CODEC_INIT")
    C_MIN=$(mins "$(left) - 45"); [ "$TRAIN_S2S" = 1 ] || C_MIN=$(mins "$(left) - 30"); [ "$SMOKE" = 1 ] && C_MIN=1
    "${CODEC_RUN[@]}" "${C_INIT[@]}" --out_dir runs/codec_full --set codec.harmonics=$HARMONICS \
      --set loss.gan_start_step=$GAN_START --set train_codec.batch_size=$CODEC_BATCH --set train_codec.lr=0.001 \
      --set train_codec.warmup_steps=200 --set train_codec.num_workers=$(( CPUS > 4 ? CPUS - 4 : 0 )) \
      --set train_codec.max_minutes=$C_MIN > $LOG/codec.log 2>&1 &
  else
    "${CODEC_RUN[@]}" --init checkpoints/codec.safetensors --decoder_only --out_dir runs/codec_gan \
      --set loss.gan_start_step=0 --set train_codec.batch_size=16 --set train_codec.lr=0.0003 \
      --set train_codec.warmup_steps=100 --set train_codec.num_workers=3 \
      --set train_codec.max_minutes=$(mins "$(left) - 45") > $LOG/codec.log 2>&1 &
  fi
  CODEC=$!
fi

# --- S2S on the shipped codec ------------------------------------------------------------------------
S2S=(python3 train_s2s.py --config tiny --codec_path "$S2S_CODEC"
     --speaker_path checkpoints/speaker_encoder.safetensors --data_dir data/synthetic --out_dir runs/s2s_gpu
     --set train_s2s.batch_size=$BATCH --set train_s2s.lr=$S2S_LR --set train_s2s.warmup_steps=200
     --set train_s2s.precision=fp32 --set train_s2s.threads=4 --set train_s2s.num_workers=$S2S_WORKERS
     --set train_s2s.eval_every_steps=0 --set train_s2s.save_every_steps=500 --set train_s2s.log_every_steps=25
     --val_clips 48 --val_dialogues 6 --crop_s $CROP --augment_strength $AUGMENT --echo $ECHO
     --depth_fraction $DEPTH_FRACTION --sentence_share $SENT_SHARE --sentence_voice_share $SENT_VOICE --text_share $TEXT_SHARE --text_word_dropout $TEXT_DROPOUT
     --set s2s.user_text_noise=$UT_NOISE)
INIT=(); [ -n "$S2S_INIT" ] && INIT=(--init "$S2S_INIT")
S1_MIN=$(mins "$S1_END - ($(date +%s) - $START)")
[ "$SMOKE" = 1 ] && S1_MIN=0
if [ "$TRAIN_S2S" = 1 ] && { [ "$SMOKE" = 1 ] || [ "$S1_END" -gt 0 ]; }; then
  "${S2S[@]}" "${INIT[@]}" --stage transcribe --stage1_steps $S1_STEPS --stage1_minutes $S1_MIN > $LOG/s2s_stage1.log 2>&1
  say "stage 1 exit $?: $(grep -a 'val cer' $LOG/s2s_stage1.log | tail -1)"
  INIT=()  # stage 2 starts from stage 1's weights
fi
if [ "$TRAIN_S2S" = 1 ]; then
  wait $DIAL; say "dialogues exit $?: $(tail -c 300 $LOG/dialogues.log | tr '\n' ' ')"
  S2_MIN=$(mins "$(left) - 50")
  [ "$SMOKE" = 1 ] && S2_MIN=0
  "${S2S[@]}" "${INIT[@]}" --stage dialogue --stage2_steps $S2_STEPS --stage2_minutes $S2_MIN > $LOG/s2s_stage2.log 2>&1
  say "stage 2 exit $?"
fi
[ -n "$CODEC" ] && { wait $CODEC; say "codec exit $?"; }

# --- what comes back ---------------------------------------------------------------------------------
FINAL=runs/s2s_gpu/s2s.safetensors
[ -f $FINAL ] || FINAL=runs/s2s_gpu/dialogue/s2s.safetensors
[ -f $FINAL ] || FINAL=runs/s2s_gpu/transcribe/s2s.safetensors
[ -f $FINAL ] && python3 tools/safetensors_shards.py split $FINAL "$OUT_DIR" --max_mb 15 --fp16 && cp runs/s2s_gpu/s2s.json "$OUT_DIR/" 2>/dev/null
for f in $LOG/*.log; do tr '\r' '\n' < $f | grep -av '^\s*$' | awk 'length < 400' > $f.txt; done
tar czf "$OUT_DIR/small.tar.gz" $LOG/*.txt runs/codec_gan/config.json runs/codec_gan/tb runs/codec_full/config.json runs/codec_full/tb \
  $(ls runs/s2s_gpu/*/val.jsonl runs/s2s_gpu/*/config.json runs/s2s_gpu/*.json 2>/dev/null) runs/s2s_gpu/*/tb \
  data/synthetic/corpus.json data/dialogues/corpus_train.json 2>/dev/null
ls -la "$OUT_DIR"
for f in $LOG/*.log.txt; do echo "== $f"; grep -a -E "val|done|exported|params|Error|error|Traceback" $f | tail -8; done
# A smoke run leaves nothing behind that the real run would take for its own (corpora, runs).
[ "$SMOKE" = 1 ] && rm -rf data/synthetic data/dialogues data/s2s_cache runs/s2s_gpu runs/codec_gan runs/codec_full runs/dev
say "end"
