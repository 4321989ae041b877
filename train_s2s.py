"""Train the S2S model in two stages (DESIGN.md, S2S_PROBE.md): first streaming transcription of the
user over the whole sentence corpus, then two-channel dialogues.

    python train_s2s.py --codec_path C --speaker_path S --data_dir data/synthetic --epochs 50
    python train_s2s.py ... --stage transcribe --max_steps 3000     # stage 1 only
    python train_s2s.py ... --stage dialogue                        # stage 2 from OUT/transcribe
    python train_s2s.py ... --resume                                # continue both stages exactly
    torchrun --nproc_per_node 4 train_s2s.py --config a6000 ...

Stage 1 ("transcribe"): the user stream is a sentence clip (augmented on the fly), the target is
its frame-aligned transcript (align_words, anchor "end", a lag of 2 frames); the agent's streams
are silence codes and PAD text, so the model also learns to stay quiet while it listens. Thousands
of distinct sentences and a dense target per word: an answer-only loss over a few hundred
questions memorises voices instead (S2S_PROBE.md).

Stage 2 ("dialogue"): random crops of the synthetic dialogues. User channel augmented on the fly
(length-preserving effects: the agent's channel is timed against it), agent channel as codec codes
pre-tokenised once, agent text aligned to the agent's audio with a small lead, the agent voice's
embedding from the voice bank as conditioning; a share of stage-1 sentences is mixed in so the
transcription is not forgotten, and `--text_share` mixes in text-only dialogues (TextDialogues:
fresh plans of the dialogue domain, no audio), because with the true transcript forced, the
rendered corpus alone taught the agent to answer 11 % of held-out requests: answering, not
hearing, was the first limit.

Each stage is a run folder of its own (OUT/transcribe, OUT/dialogue) with checkpoints, TensorBoard
and val.jsonl (the validation curve); the final weights go to OUT/s2s.safetensors (fp16) with the
JSON config and the tokenizer beside them, which is what s2s_transformer.load() reads.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import checkpoint_io as ckio
import dialogue_corpus
import s2s_eval
import train_utils as tu
from audio_io import load_audio, read_manifest
from config import ConfigError, add_train_args, config_from_args, from_dict, to_dict
from s2s_batching import (StageSettings, TextDialogues, align, batch_user_input, collate, frames_for, read_channel,
                          read_dialogues)
from s2s_clock import clock_features
from s2s_eval import silence_codes_of, validate_transcription, validation_clips
from s2s_transformer import S2SModel, fill_missing_clock
from telugu_tokenizer import PAD_ID, Tokenizer

STAGES = ("transcribe", "dialogue")
ROOT = Path(__file__).resolve().parent


def window_note(crop_s: float, frame_rate: float, context_frames: int) -> str | None:
    """Streaming attends over context_frames; training sees crop_s at most. A model that never saw
    that much context hears worse past it (shipped model J, held-out dialogues: user CER 0.61 with
    a 30 s window against 0.57 with its 10 s crops' length; docs/experiments.md, "The attention window")."""
    crop = int(round(crop_s * frame_rate))
    if crop >= context_frames:
        return None
    return (f"stage-2 crops of {crop_s:g} s ({crop} frames) are shorter than s2s.context_frames={context_frames}: "
            f"the model will stream with more context than it trained on; use --crop_s "
            f"{context_frames / frame_rate:g} or more, or --set s2s.context_frames={crop}")


# --- stage 1 data: the sentence corpus -------------------------------------------------------------

class Sentences(torch.utils.data.Dataset):
    """Stage 1 items: one clip (augmented, after a random lead of silence, followed by silence) as
    the user's side, its transcript as the user-text target, the agent silent. Item i of epoch e
    is fixed by (seed, e, i): a resumed run sees exactly the audio an unbroken one would."""

    def __init__(self, manifest, tokenizer, sample_rate, frame_size, settings: StageSettings, seed: int,
                 voices: np.ndarray | None):
        self.rows = [dict(audio=r["audio"], words=r["words"], speaker=r["speaker"])
                     for r in read_manifest(manifest) if r.get("words")]
        if not self.rows:
            raise SystemExit(f"{manifest}: no utterances with word timings")
        self.tok, self.sr, self.fs, self.s = tokenizer, sample_rate, frame_size, settings
        self.frame_rate = sample_rate / frame_size
        self.seed, self.epoch, self.voices = seed, 0, voices

    def __len__(self):
        return len(self.rows)

    def item(self, i, rng):
        row = self.rows[i]
        pcm = load_audio(row["audio"], self.sr)
        words = [dict(w) for w in row["words"]]
        if self.s.augment_strength > 0:
            pcm, words, _ = augment.augment(pcm, self.sr, rng, words, strength=self.s.augment_strength)
        lead = int(rng.uniform(0, self.s.lead_silence_s) * self.sr)
        for w in words:
            w["start"], w["end"] = w["start"] + lead / self.sr, w["end"] + lead / self.sr
        n = frames_for(lead + len(pcm) + int(self.s.tail_silence_s * self.sr), self.fs)
        user_text, n = align(self.tok, words, n, self.frame_rate, self.s.user_lag_frames, "end")
        user = np.zeros(n * self.fs, np.float32)
        user[lead:lead + len(pcm)] = pcm
        voice = self.voices[int(rng.integers(len(self.voices)))] if self.voices is not None else None
        if self.s.sentence_voice_share < 1 and rng.random() >= self.s.sentence_voice_share:
            voice = None  # drawn after everything else, so the default (1.0) keeps every item as it was
        # Some moment, as the agent always knows one (drawn last, so the items stay as they were).
        clock = clock_features(dialogue_corpus.NOW_START +
                               dt.timedelta(minutes=int(rng.integers(dialogue_corpus.NOW_SPAN_MIN))))
        return dict(user=user, user_text=np.asarray(user_text), agent_text=np.full(n, PAD_ID),
                    agent_codes=None, voice=voice, clock=clock)

    def __getitem__(self, i):
        return self.item(i, tu.item_rng(self.seed, self.epoch, i))


# --- stage 2 data: dialogues -----------------------------------------------------------------------

def file_key(path) -> str:
    st = os.stat(path)
    return f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"


class CodeCache:
    """The agent channel of every dialogue as codec codes, encoded once by the frozen codec:
    int16 shards [n_codebooks, frames] (numpy .npy, memory-mapped, so a corpus bigger than memory
    streams from disk) and index.json {file key: [shard, offset, frames]}, in a folder named by
    the codec checkpoint's hash. A re-run, or another stage, encodes nothing it already has."""

    def __init__(self, root, codec_path, shard_frames: int = 1 << 17):  # 87 min of audio a shard
        self.dir = Path(root) / ckio.codec_hash(codec_path)
        self.shard_frames = shard_frames
        index = self.dir / "index.json"
        self.index = json.loads(index.read_text()) if index.exists() else {}
        self._shards: dict[int, np.ndarray] = {}

    def missing(self, keys) -> list[str]:
        return [k for k in keys if k not in self.index]

    def build(self, jobs, encode) -> tuple[int, int]:
        """jobs: [(key, load_pcm)]; encode(pcm) -> int codes [K, frames]. Returns (reused, encoded)."""
        jobs = list(dict(jobs).items())  # a dialogue listed twice is encoded once
        todo = [(k, load) for k, load in jobs if k not in self.index]
        if not todo:
            return len(jobs), 0
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir.parent / ".gitignore").write_text("*\n")  # derived data: never committed
        shard = 1 + max((v[0] for v in self.index.values()), default=-1)
        parts, offset = [], 0

        def flush():
            nonlocal parts, offset, shard
            if not parts:
                return
            path = self.dir / f"shard_{shard:05d}.npy"
            tmp = path.with_name(path.name + ".tmp.npy")
            np.save(tmp, np.concatenate([p for _, p in parts], axis=1).astype(np.int16))
            os.replace(tmp, path)
            for key, codes in parts:
                self.index[key][0] = shard
            tmp_index = self.dir / "index.json.tmp"
            tmp_index.write_text(json.dumps(self.index))
            os.replace(tmp_index, self.dir / "index.json")  # only after the shard it points into
            parts, offset, shard = [], 0, shard + 1

        pending = {}
        for key, load in tqdm(todo, desc="pre-tokenising agent audio", dynamic_ncols=True):
            codes = np.asarray(encode(load()))
            pending[key] = [shard, offset, codes.shape[1]]
            parts.append((key, codes))
            offset += codes.shape[1]
            if offset >= self.shard_frames:
                self.index.update({k: pending.pop(k) for k, _ in parts})
                flush()
        self.index.update(pending)
        flush()
        return len(jobs) - len(todo), len(todo)

    def get(self, key) -> np.ndarray:
        shard, offset, n = self.index[key]
        if shard not in self._shards:
            self._shards[shard] = np.load(self.dir / f"shard_{shard:05d}.npy", mmap_mode="r")
        return self._shards[shard][:, offset:offset + n]


def dialogue_words(d: dict, side: str) -> list[dict]:
    return d[f"{side}_words"]


class Dialogues(torch.utils.data.Dataset):
    """Stage 2 items: a random crop of `crop_s` of one dialogue (the whole one when shorter), user
    channel augmented with length-preserving effects, agent codes from the CodeCache, both text
    streams aligned over the whole dialogue then cropped, the agent voice's embedding."""

    def __init__(self, dialogues, cache: CodeCache, tokenizer, sample_rate, frame_size,
                 settings: StageSettings, seed: int, voice_bank):
        self.dialogues, self.cache, self.tok = dialogues, cache, tokenizer
        self.sr, self.fs, self.s, self.seed, self.epoch = sample_rate, frame_size, settings, seed, 0
        rate = sample_rate / frame_size
        self.crop = max(1, int(round(settings.crop_s * rate)))
        self.texts = []  # per dialogue: (user_text, agent_text) over its whole length, int32
        for d in dialogues:
            n = cache.get(file_key(d["audio"])).shape[1]
            user, nu = align(tokenizer, dialogue_words(d, "user"), n, rate, settings.user_lag_frames, "end")
            agent, na = align(tokenizer, dialogue_words(d, "agent"), n, rate, -settings.agent_lead_frames, "start")
            self.texts.append((np.asarray(user[:n], np.int32), np.asarray(agent[:n], np.int32)))
        self.voices = {d["agent_voice"]: voice_bank.embedding(d["agent_voice"]).numpy() for d in dialogues}

    def __len__(self):
        return len(self.dialogues)

    def item(self, i, rng):
        d = self.dialogues[i]
        codes = self.cache.get(file_key(d["audio"]))
        n_total = codes.shape[1]
        n = min(self.crop, n_total)
        start = int(rng.integers(0, n_total - n + 1))
        # The dry user channel (tempo only) augmented afresh each epoch; else the stored augmented one.
        dry = d["user_dry"] is not None and self.s.augment_strength > 0
        user = read_channel(d["user_dry"], 0, start * self.fs, n * self.fs, self.sr) if dry else \
            read_channel(d["audio"], 0, start * self.fs, n * self.fs, self.sr)
        user = np.pad(user, (0, n * self.fs - len(user)))
        if dry:
            user, _, _ = augment.augment(user, self.sr, rng, strength=self.s.augment_strength,
                                         effects=augment.LENGTH_PRESERVING)
        user_text, agent_text = self.texts[i]
        return dict(user=user, user_text=user_text[start:start + n].astype(np.int64),
                    agent_text=agent_text[start:start + n].astype(np.int64),
                    agent_codes=np.asarray(codes[:, start:start + n], np.int64), voice=self.voices[d["agent_voice"]],
                    clock=clock_features(d["meta"].get("now")))

    def __getitem__(self, i):
        return self.item(i, tu.item_rng(self.seed, self.epoch, i))


class Mixed(torch.utils.data.Dataset):
    """Stage 2's epoch: every dialogue once, plus sentences as `sentence_share` of the items and
    text-only dialogues as `text_share` (which one is drawn per item from (seed, epoch, index), so
    resumes stay exact)."""

    def __init__(self, dialogues: Dialogues, sentences: Sentences | None, share: float, seed: int,
                 texts: TextDialogues | None = None, text_share: float = 0.0):
        self.dialogues, self.sentences, self.texts, self.seed, self.epoch = dialogues, sentences, texts, seed, 0
        share = min(max(share, 0.0), 0.9) if sentences is not None else 0.0
        text_share = min(max(text_share, 0.0), 0.9) if texts is not None else 0.0
        if share + text_share > 0.95:
            raise ValueError(f"sentence_share {share} + text_share {text_share} leave no room for the dialogues")
        rest = 1 - share - text_share
        self.n_sentences = int(round(len(dialogues) * share / rest))
        self.n_texts = int(round(len(dialogues) * text_share / rest))

    def __len__(self):
        return len(self.dialogues) + self.n_sentences + self.n_texts

    def __getitem__(self, i):
        rng = tu.item_rng(self.seed, self.epoch, i)
        if i < len(self.dialogues):
            return self.dialogues.item(i, rng)
        if i < len(self.dialogues) + self.n_sentences:
            return self.sentences.item(int(rng.integers(len(self.sentences))), rng)
        self.texts.epoch = self.epoch
        return self.texts.item(i, rng)


class LossOf(torch.nn.Module):
    """model.loss as a forward(), so DDP's hooks see it."""

    def __init__(self, model, depth_fraction: float = 1.0):
        super().__init__()
        self.model, self.depth_fraction = model, depth_fraction

    def forward(self, batch, weights):
        return self.model.loss(batch, weights, depth_fraction=self.depth_fraction)


# --- setup helpers -------------------------------------------------------------------------------

def load_codec(path, device):
    import telugu_codec_fixed
    codec = telugu_codec_fixed.load(path, device)
    for p in codec.parameters():
        p.requires_grad_(False)
    return codec


def load_voice_bank(args):
    from speaker_embeddings import VoiceBank
    path = Path(args.voice_bank) if args.voice_bank else (Path(args.speaker_path).parent / "voice_bank.json"
                                                          if args.speaker_path else None)
    if path is None or not path.exists():
        return None
    return VoiceBank.load(path)


def build_config(args):
    """The Config of this run: preset + --set + flags, with the codec's, the speaker encoder's and
    the tokenizer's facts filled in (one place for each fact: the checkpoints that define them)."""
    cfg = config_from_args(args, "train_s2s")
    if args.out_dir is None and cfg.train_s2s.out_dir == "runs/codec":
        cfg.train_s2s.out_dir = "runs/s2s"
    codec_cfg = from_dict(json.loads(Path(args.codec_path).with_suffix(".json").read_text(encoding="utf-8")))
    cfg.codec = codec_cfg.codec
    if args.speaker_path and Path(args.speaker_path).with_suffix(".json").exists():
        saved = json.loads(Path(args.speaker_path).with_suffix(".json").read_text(encoding="utf-8"))
        cfg.speaker = from_dict({"speaker": saved["speaker"]}).speaker
    return cfg


def export(model, cfg, path, tokenizer_path, codec_path, fp16=True, metadata=None):
    """Weights + config + tokenizer; the metadata names the codec the model was trained with (its
    agent codes, and the user latents or codes, mean something only to that codec)."""
    metadata = {**(metadata or {}), "codec_sha": ckio.codec_hash(codec_path)}
    ckio.export_safetensors(model.state_dict(), path, cfg, fp16=fp16, metadata=metadata)
    dst = Path(path).parent / "telugu_spm.model"
    if Path(tokenizer_path).resolve() != dst.resolve():
        shutil.copyfile(tokenizer_path, dst)


def append_jsonl(path, row):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")


# --- one stage: the training loop ----------------------------------------------------------------

def run_stage(stage, cfg, args, st: StageSettings, rt, model, dataset, weights, total_steps, validate, run_dir,
              collate_fn, minutes: float = 0.0):
    """The loop of either stage (train_codec_dac.py's structure): resume, schedule, step, validate,
    checkpoint. Returns the model's final step count in this stage."""
    train = cfg.train_s2s
    opt = torch.optim.AdamW(model.parameters(), lr=train.lr, betas=tuple(train.betas), weight_decay=train.weight_decay)
    ckpts = ckio.Checkpoints(run_dir, train.keep_checkpoints)
    step, epoch, batch_in_epoch, elapsed = 0, 0, 0, 0.0
    state, path = tu.resolve_resume(args.resume, ckpts)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        elapsed = state.get("elapsed_s", 0.0)
        tu.set_rng_state(state["rng"], rt.rank)  # each rank's own stream (dropout differs per rank)
        if rt.is_main:
            print(f"{stage}: resumed from {path} at step {step} (epoch {epoch}, batch {batch_in_epoch})")
    final = Path(run_dir) / "s2s.safetensors"
    if step >= total_steps and final.exists():
        if rt.is_main:
            print(f"{stage}: already done ({step} steps), weights in {final}")
        return step

    net = LossOf(model, st.depth_fraction)
    if rt.ddp:  # stage 1 with no codebook weight leaves the depth transformer unused
        unused = weights is not None and not any(weights.get(k) for k in ("codebook_0", "codebooks"))
        net = DDP(net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
                  find_unused_parameters=unused)
    if train.compile:
        net = torch.compile(net)
    writer = tu.tensorboard(rt, run_dir)

    def save():
        rng = tu.rng_state(rt)  # every rank's: a collective, so every rank calls save()
        if rt.is_main:
            ckpts.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "epoch": epoch,
                        "batch_in_epoch": batch_in_epoch, "elapsed_s": elapsed, "rng": rng,
                        "config": to_dict(cfg), "stage": stage, "settings": asdict(st)}, step, cfg)

    def run_validation():
        model.eval()  # no dropout while the generator steps
        try:
            metrics = validate(model)
        except Exception as e:  # a broken validation must not cost the training run its weights
            import traceback
            traceback.print_exc()
            tqdm.write(f"{stage} step {step}: validation failed ({type(e).__name__}: {e}); training goes on")
            metrics = {}
        model.train()
        tqdm.write(f"{stage} step {step} ({elapsed / 60:.1f} min) val " +
                   " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
        for ref, hyp in metrics.get("examples", [])[:2]:
            tqdm.write(f"  ref: {ref}\n  hyp: {hyp}")
        append_jsonl(Path(run_dir) / "val.jsonl", {"step": step, "elapsed_s": round(elapsed, 1),
                                                    **{k: v for k, v in metrics.items() if isinstance(v, float)}})
        if writer:
            for k, v in metrics.items():
                if isinstance(v, float):
                    writer.add_scalar(f"val/{k}", v, step)

    if rt.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{stage}: {n_params / 1e6:.2f} M params, {len(dataset)} items/epoch, {total_steps} steps, "
              f"user_input {cfg.s2s.user_input}, device {rt.device}, world {rt.world_size}")
    bar = tqdm(total=total_steps, initial=step, disable=not rt.is_main, desc=stage, dynamic_ncols=True)
    accum = max(1, train.grad_accum)
    echo = max(1, st.echo)
    if echo > 1 and accum > 1:
        raise SystemExit("--echo > 1 needs train_s2s.grad_accum 1 (an echoed batch is one optimizer step)")
    done = step >= total_steps
    deadline = tu.Deadline(minutes or train.max_minutes)  # the stage's own box, else train_s2s.max_minutes
    while not done and epoch < train.epochs:
        dataset.epoch = epoch
        batches = tu.epoch_batches(len(dataset), train.batch_size, epoch, train.seed, rt.rank, rt.world_size)
        batches = batches[:max(accum, len(batches) // accum * accum)]
        loader = tu.make_loader(dataset, batches[batch_in_epoch:], train, rt, collate_fn)
        micro, t0 = 0, time.time()
        for batch in loader:
            batch = {k: v.to(rt.device, non_blocking=True) for k, v in batch.items()}
            batch["user"] = batch_user_input(batch, cfg.s2s.user_input, args.codec, model.n_codebooks)
            batch_in_epoch += 1
            due_eval = due_save = False
            for _ in range(echo):  # data echoing: a loader-bound GPU trains on each batch `echo` times
                lr = tu.lr_at(step, train, total_steps, deadline.progress())
                tu.set_lr(opt, lr)
                micro += 1
                last = micro % accum == 0
                with tu.sync_gradients(net, last):  # DDP averages on the last micro-batch only
                    with rt.autocast():
                        loss, parts = net(batch, weights)
                    (loss / accum).backward()
                if not last:
                    break
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip).item()
                opt.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                elapsed += time.time() - t0
                t0 = time.time()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", user=f"{parts['user_text'].item():.3f}")
                if writer and step % train.log_every_steps == 0:
                    writer.add_scalar("train/loss", loss.item(), step)
                    writer.add_scalar("train/lr", lr, step)
                    writer.add_scalar("train/grad_norm", grad_norm, step)
                    for k, v in parts.items():
                        writer.add_scalar(f"train/{k}", v.item(), step)
                due_eval |= bool(train.eval_every_steps) and step % train.eval_every_steps == 0
                due_save |= step % train.save_every_steps == 0
                if step >= total_steps:
                    break
            # Validation and checkpoints fall between batches, so a resume replays whole batches.
            if rt.is_main and due_eval:
                run_validation()
                t0 = time.time()  # validation is not training time
            if due_save:
                save()
            if step >= total_steps or deadline.passed(rt):
                done = True
                break
        else:
            epoch += 1
            batch_in_epoch = 0
            if train.save_every and epoch % train.save_every == 0:
                save()
    bar.close()
    if rt.is_main and not (train.eval_every_steps and step % train.eval_every_steps == 0):
        run_validation()
    save()
    if rt.is_main:
        export(model, cfg, final, args.tokenizer, args.codec_path, fp16=False, metadata={"step": step, "stage": stage})
        print(f"{stage}: done at step {step} ({elapsed / 60:.1f} min of training): {final}")
        if writer:
            writer.close()
    if rt.ddp:
        dist.barrier()
    return step


def stage_steps(explicit: int, train, n_items: int, world: int) -> int:
    if explicit:
        return explicit
    if train.max_steps:
        return train.max_steps
    n_batches = len(tu.epoch_batches(n_items, train.batch_size, 0, train.seed, 0, world))
    return max(1, n_batches * train.epochs // max(1, train.grad_accum))


# --- main ----------------------------------------------------------------------------------------

def main(argv=None):
    parser = add_train_args(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--codec_path", required=True, help="the frozen codec (.safetensors + .json)")
    parser.add_argument("--speaker_path", help="speaker encoder .safetensors; its voice bank is voice_bank.json beside it")
    parser.add_argument("--voice_bank", help="voice bank JSON (default: beside --speaker_path)")
    parser.add_argument("--tokenizer", default=str(ROOT / "checkpoints" / "telugu_spm.model"))
    parser.add_argument("--stage", choices=STAGES, help="run one stage (default: transcribe, then dialogue)")
    parser.add_argument("--dialogue_dir", help="dialogue corpus (default: DATA_DIR/../dialogues)")
    parser.add_argument("--cache_dir", help="pre-tokenised codes (default: DATA_DIR/../s2s_cache)")
    parser.add_argument("--init", help="weights to start from (.safetensors or a .pt checkpoint); stage 2 "
                                       "defaults to OUT/transcribe/s2s.safetensors")
    parser.add_argument("--no_fp16", action="store_true", help="export OUT/s2s.safetensors in fp32")
    parser.add_argument("--export_from", metavar="STEP_PT", help="only export this training checkpoint "
                        "(fp16, config, tokenizer, codec hash) to --export_to, e.g. checkpoints/s2s.safetensors")
    parser.add_argument("--export_to", metavar="PATH")
    for f in StageSettings.__dataclass_fields__.values():
        parser.add_argument(f"--{f.name}", type=type(f.default), default=f.default)
    args = parser.parse_args(argv)
    if args.export_from:
        if not args.export_to:
            parser.error("--export_from needs --export_to")
        state = ckio.load_checkpoint(args.export_from)
        cfg = from_dict(state["config"])
        model = S2SModel(cfg)
        model.load_state_dict(state["model"])
        export(model, cfg, args.export_to, args.tokenizer, args.codec_path, fp16=not args.no_fp16,
               metadata={"step": state["step"], "stage": state.get("stage", "")})
        print(f"exported {args.export_from} (step {state['step']}) to {args.export_to}")
        return 0
    try:
        cfg = build_config(args)
    except ConfigError as e:
        parser.error(str(e))
    st = StageSettings(**{k: getattr(args, k) for k in StageSettings.__dataclass_fields__})
    train = cfg.train_s2s
    rt = tu.setup_runtime(train)
    out_dir = Path(train.out_dir)
    data_dir = Path(cfg.data.data_dir)
    train_manifest = data_dir / cfg.data.train_manifest
    if not train_manifest.exists():
        raise SystemExit(f"no sentence manifest at {train_manifest}: build one with synthetic_corpus.py")
    tokenizer = Tokenizer.load(args.tokenizer)
    cfg.s2s.text_vocab_size = tokenizer.vocab_size
    note = window_note(st.crop_s, cfg.codec.sample_rate / cfg.codec.frame_size, cfg.s2s.context_frames)
    if note and rt.is_main:
        print(f"warning: {note}")
    codec = args.codec = load_codec(args.codec_path, rt.device)
    silence = silence_codes_of(codec)
    bank = load_voice_bank(args)
    if bank is not None and bank.names():
        cfg.speaker.embed_dim = len(bank.embedding(bank.names()[0]))
    voices = np.stack([bank.embedding(n).numpy() for n in bank.names()]) if bank is not None and bank.names() else None
    stages = [args.stage] if args.stage else list(STAGES)
    sr, fs = cfg.codec.sample_rate, cfg.codec.frame_size
    sentences = Sentences(train_manifest, tokenizer, sr, fs, st, train.seed, voices)
    collate_fn = lambda items: collate(items, silence, cfg.speaker.embed_dim)
    val_manifest = data_dir / cfg.data.val_manifest
    clips = validation_clips(val_manifest, st.val_clips, sr) if rt.is_main and val_manifest.exists() else []
    # stage-1 validation transcribes as the sentence items were trained: with a voice unless none had one
    val_voice = voices[0] if voices is not None and st.sentence_voice_share > 0 else None

    def validate_stage1(model):
        return validate_transcription(model, clips, tokenizer, codec, silence, val_voice,
                                      lag_frames=st.user_lag_frames) if clips else {}

    model = S2SModel(cfg).to(rt.device)
    if args.init:
        model.load_state_dict(fill_missing_clock(model, load_weights(args.init)), strict=True)
        if rt.is_main:
            print(f"initialised from {args.init} (a checkpoint in the run folder, with --resume, overrides it)")
    for stage in stages:
        run_dir = out_dir / stage
        if stage == "transcribe":
            total = stage_steps(st.stage1_steps, train, len(sentences), rt.world_size)
            weights = {"user_text": 1.0, "agent_text": st.stage1_agent_text_weight,
                       "codebook_0": st.stage1_code_weight, "codebooks": st.stage1_code_weight}
            run_stage(stage, cfg, args, st, rt, model, sentences, weights, total, validate_stage1, run_dir, collate_fn,
                      st.stage1_minutes)
            continue
        # stage 2: dialogues
        dialogue_dir = Path(args.dialogue_dir) if args.dialogue_dir else data_dir.parent / "dialogues"
        dialogues = read_dialogues(dialogue_dir, "train", st.max_dialogues or None)
        if not dialogues:
            raise SystemExit(f"stage dialogue: no dialogues in {dialogue_dir}/dialogues_train.jsonl (dialogue_corpus.py)")
        if bank is None:
            raise SystemExit("stage dialogue needs the voice bank: --speaker_path S (voice_bank.json beside it)")
        if not args.init and "transcribe" not in stages:  # alone, stage 2 starts from stage 1's weights
            init = out_dir / "transcribe" / "s2s.safetensors"
            if init.exists():
                model.load_state_dict(fill_missing_clock(model, load_weights(init)), strict=True)
                if rt.is_main:
                    print(f"dialogue: starting from {init}")
            elif rt.is_main:
                print(f"dialogue: warning: no stage-1 weights at {init}; starting from scratch")
        cache = CodeCache(Path(args.cache_dir) if args.cache_dir else data_dir.parent / "s2s_cache", args.codec_path)
        heldout = read_dialogues(dialogue_dir, "heldout_val", st.val_dialogues) if rt.is_main and st.val_dialogues > 0 else []
        if rt.is_main:
            jobs = [(file_key(d["audio"]), (lambda p=d["audio"]: read_channel(p, 1, sample_rate=sr)))
                    for d in dialogues + heldout]
            encode = lambda pcm: codec.encode(torch.from_numpy(pcm).to(rt.device)[None, None])[0].cpu().numpy()
            reused, encoded = cache.build(jobs, encode)
            print(f"code cache {cache.dir}: {reused} reused, {encoded} encoded")
        if rt.ddp:
            # Pre-tokenising a real corpus can take longer than a collective's timeout (30 min), so
            # the other ranks wait on the cache's index on disk, then meet rank 0 in a barrier.
            index, keys = cache.dir / "index.json", [file_key(d["audio"]) for d in dialogues]
            while not rt.is_main and not (index.exists() and all(k in json.loads(index.read_text()) for k in keys)):
                time.sleep(5)
            dist.barrier()
            cache = CodeCache(cache.dir.parent, args.codec_path)
        dset = Dialogues(dialogues, cache, tokenizer, sr, fs, st, train.seed, bank)
        texts = TextDialogues(tokenizer, sr, fs, st, train.seed, bank) if st.text_share > 0 else None
        mixed = Mixed(dset, sentences, st.sentence_share, train.seed, texts, st.text_share)
        total = stage_steps(st.stage2_steps, train, len(mixed), rt.world_size)

        def validate_stage2(model):
            out = validate_stage1(model)
            if heldout:
                out.update(validate_dialogues(model, heldout, codec, bank, tokenizer, cfg))
            if texts is not None and st.val_dialogues > 0:  # answering alone, on held-out text dialogues
                report = s2s_eval.text_answers(model, codec, bank, tokenizer, 4 * st.val_dialogues)
                out["text_answer_accuracy"] = float(report["text_answer_accuracy"])
                report = s2s_eval.text_forced(model, codec, bank, tokenizer, 16 * st.val_dialogues)
                out.update({k: float(v) for k, v in report.items() if k != "forced_turns"})
            return out

        weights = None if st.stage2_code_weight < 0 else \
            {"codebook_0": st.stage2_code_weight, "codebooks": st.stage2_code_weight}
        run_stage(stage, cfg, args, st, rt, model, mixed, weights, total, validate_stage2, run_dir, collate_fn,
                  st.stage2_minutes)
    if rt.is_main:
        final = out_dir / "s2s.safetensors"
        export(model, cfg, final, args.tokenizer, args.codec_path, fp16=not args.no_fp16,
               metadata={"stages": ",".join(stages)})
        print(f"exported {final} ({final.stat().st_size / 1e6:.1f} MB)")
    tu.cleanup(rt)


def load_weights(path) -> dict:
    path = Path(path)
    if path.suffix == ".pt":
        return ckio.load_checkpoint(path)["model"]
    return ckio.load_safetensors(path)


def validate_dialogues(model, dialogues, codec, bank, tokenizer, cfg) -> dict:
    """Answer accuracy on a few held-out dialogues, the agent free-running (greedy)."""
    results = [s2s_eval.run_dialogue(model, codec, bank, tokenizer, d, cfg.context, temperature=0.0)
               for d in dialogues]
    turns = [t for r in results for t in r["turns"]]
    return {"answer_accuracy": float(np.mean([t["correct"] for t in turns])) if turns else 0.0}


import augment  # noqa: E402  (user-channel augmentation; after the definitions it does not need)

if __name__ == "__main__":
    sys.exit(main())
