"""Train the ear (telugu_asr.py): streaming CTC on Telugu characters, plus a speech-probability head.

    python train_asr.py --config tiny --data_dir data/synthetic --extra_manifests data/ear_synthetic/*/train.jsonl \
        --out_dir runs/asr --set train_asr.max_minutes=90 --resume
    python train_asr.py --export checkpoints/asr.safetensors --out_dir runs/asr     # latest weights -> shipped
    python train_asr.py --eval --checkpoint checkpoints/asr.safetensors --manifest data/synthetic/test.jsonl

Rows whose `lang` is not "te" (synthetic_corpus.py --foreign_clips: English) train an empty
transcript: the ear must write nothing for speech that is not Telugu. Every clip is read whole (CTC
needs the whole transcript), padded with up to `asr.pad_s` of quiet
noise on both sides (so the speech head sees silence), sent through augment.py with probability
`asr.augment_prob` (tempo, pitch, formants, room, noise, microphone, line, level, clipping), then
SpecAugment on the log-mel. Items are addressed as (epoch, index), their randomness from
`item_rng`, so `--resume` continues exactly. Batches group clips of similar length.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import augment
import checkpoint_io as ckio
import telugu_asr as ta
import train_utils as tu
from audio_io import ManifestIndex, load_audio, read_manifest
from config import AsrConfig, Config, add_train_args, config_from_args, save_config

AUGMENT_EVAL_SEED = 777  # the fixed seeds of the "augmented" evaluation column: rooms never trained on


# --- data ---------------------------------------------------------------------------------------------

class EarClips(torch.utils.data.Dataset):
    """Training clips of several manifests as one sequence; items are (epoch, index)."""

    def __init__(self, manifests, cfg: Config, seed: int):
        self.indexes = [ManifestIndex(p) for p in manifests]
        self.starts = np.cumsum([0] + [len(ix) for ix in self.indexes])
        self.durations = np.concatenate([ix.durations for ix in self.indexes])
        self.cfg, self.seed = cfg, seed

    def __len__(self):
        return int(self.starts[-1])

    def row(self, index: int) -> dict:
        k = int(np.searchsorted(self.starts, index, side="right") - 1)
        return self.indexes[k][index - int(self.starts[k])]

    def __getitem__(self, key):
        epoch, index = key
        rng = tu.item_rng(self.seed, epoch, index)
        row = self.row(index)
        a, sr = self.cfg.asr, self.cfg.asr.sample_rate
        pcm = load_audio(row["audio"], sr)
        words = row.get("words") or []
        if rng.random() < a.augment_prob:
            pcm, words, _ = augment.augment(pcm, sr, rng, words=words, strength=a.augment_strength)
        pcm, words = pad_with_quiet(pcm, words, sr, a.pad_s, rng)
        # Speech in another language is speech (the speech head says so) with nothing to write.
        target = ta.encode_text(row["text"]) if row.get("lang", "te") == "te" else []
        return pcm, target, speech_labels(words, len(pcm), self.cfg.audio.frame_size, sr)


def pad_with_quiet(pcm, words, sr: int, pad_s: float, rng):
    """Up to pad_s of low noise before and after (the ear must hear where speech is not)."""
    before, after = (int(rng.uniform(0, pad_s) * sr) for _ in range(2))
    level = 10 ** (rng.uniform(-75, -50) / 20)
    out = (rng.standard_normal(before + len(pcm) + after) * level).astype(np.float32)
    out[before:before + len(pcm)] += pcm
    shift = before / sr
    return out, [dict(w, start=w["start"] + shift, end=w["end"] + shift) for w in words]


def speech_labels(words, n_samples: int, frame_size: int, sr: int) -> np.ndarray:
    """1 for every 40 ms frame that overlaps a word, else 0."""
    n = math.ceil(n_samples / frame_size)
    labels = np.zeros(n, dtype=np.float32)
    for w in words:
        labels[int(w["start"] * sr // frame_size):math.ceil(w["end"] * sr / frame_size)] = 1.0
    return labels


def collate(items, frame_size: int, ctc_per_frame: int):
    """Pad to whole frames plus one (CTC emits a little after the sound); lengths in CTC slots."""
    frames = [math.ceil(len(p) / frame_size) + 1 for p, _, _ in items]
    T = max(frames)
    pcm = torch.zeros(len(items), T * frame_size)
    speech = torch.zeros(len(items), T)
    for b, (p, _, lab) in enumerate(items):
        pcm[b, :len(p)] = torch.from_numpy(p)
        speech[b, :len(lab)] = torch.from_numpy(lab)
    targets = torch.tensor([t for _, ids, _ in items for t in ids], dtype=torch.long)
    target_lengths = torch.tensor([len(ids) for _, ids, _ in items], dtype=torch.long)
    return pcm, targets, target_lengths, torch.tensor(frames) * ctc_per_frame, torch.tensor(frames), speech


def length_batches(durations, batch_seconds: float, max_batch: int, epoch: int, seed: int, rank: int = 0,
                   world_size: int = 1) -> list[list[int]]:
    """Batches of clips of similar length (little padding), at most `batch_seconds` of padded audio
    each, in a random order fixed by (seed, epoch), so a resume skips exactly what it trained on."""
    g = np.random.default_rng([seed, epoch])
    order = g.permutation(len(durations))
    batches = []
    for chunk in np.array_split(order, max(1, len(order) // (max_batch * 50))):
        chunk = chunk[np.argsort(durations[chunk], kind="stable")]
        batch, longest = [], 0.0
        for i in chunk:
            longest_if = max(longest, float(durations[i]))
            if batch and (len(batch) >= max_batch or longest_if * (len(batch) + 1) > batch_seconds):
                batches.append(batch)
                batch, longest_if = [], float(durations[i])
            batch.append(int(i))
            longest = longest_if
        if batch:
            batches.append(batch)
    g.shuffle(batches)
    n = len(batches) // world_size
    return batches[rank * n:(rank + 1) * n]


def spec_augment(a: AsrConfig, generator: torch.Generator):
    """SpecAugment on normalised log-mel [B, hops, mels]: masked spans are set to 0 (the mean)."""
    def apply(x):
        B, T, M = x.shape
        keep = torch.ones(B, T, M, dtype=torch.bool)
        for b in range(B):
            for _ in range(a.spec_time_masks):
                w = int(torch.randint(0, a.spec_time_width + 1, (1,), generator=generator))
                t0 = int(torch.randint(0, max(1, T - w), (1,), generator=generator))
                keep[b, t0:t0 + w] = False
            for _ in range(a.spec_freq_masks):
                w = int(torch.randint(0, a.spec_freq_width + 1, (1,), generator=generator))
                f0 = int(torch.randint(0, max(1, M - w), (1,), generator=generator))
                keep[b, :, f0:f0 + w] = False
        return x * keep.to(x.device)
    return apply


@torch.no_grad()
def mel_statistics(ear: ta.Ear, dataset: EarClips, n: int = 200, seed: int = 0):
    """Per-band mean and std of the log-mel over n random training clips (augmented as in training)."""
    rng = np.random.default_rng(seed)
    feats = []
    for i in rng.choice(len(dataset), size=min(n, len(dataset)), replace=False):
        pcm = torch.from_numpy(dataset[(0, int(i))][0])[None]
        mel, _ = ear.mel(pcm, pcm.new_zeros(1, ear.mel.history))
        feats.append(mel[0])
    feats = torch.cat(feats)
    return feats.mean(0), feats.std(0).clamp_min(1e-3)


# --- evaluation -----------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(ear: ta.Ear, rows, augment_seed: int | None = None, decoder=None) -> dict:
    """Greedy CER over `rows`, per speaker and overall (character-weighted); with augment_seed every
    clip goes through augment.py with its own fixed seed (augment_seed, clip index); with decoder
    (ear_lm.BeamDecoder) the CER of its reading instead."""
    was_training = ear.training
    ear.eval()
    errors, chars = defaultdict(float), defaultdict(int)
    for i, row in enumerate(rows):
        pcm = load_audio(row["audio"], ear.sample_rate)
        if augment_seed is not None:
            pcm, _, _ = augment.augment(pcm, ear.sample_rate, np.random.default_rng([augment_seed, i]))
        hyp, log_probs = ear.transcribe(pcm, return_log_probs=True)
        if decoder is not None:
            hyp = decoder.decode(log_probs)
        ref = ta.asr_text(row["text"])
        n = max(1, len(ref))
        for key in (row["speaker"], "all"):
            errors[key] += ta.char_error_rate(hyp, ref) * n
            chars[key] += n
    ear.train(was_training)
    return {k: round(errors[k] / chars[k], 4) for k in sorted(chars, key=lambda k: (k == "all", k))}


def eval_rows(manifest, per_speaker: int = 0) -> list[dict]:
    """The first `per_speaker` clips of each speaker in manifest order (all with 0): fixed, so every
    checkpoint is scored on the same clips."""
    rows, count = [], defaultdict(int)
    for row in read_manifest(manifest):
        if per_speaker <= 0 or count[row["speaker"]] < per_speaker:
            rows.append(row)
            count[row["speaker"]] += 1
    return rows


def run_eval(args) -> int:
    torch.set_num_threads(args.threads or 1)
    ear = ta.load(args.checkpoint)
    report = {"checkpoint": str(args.checkpoint or ta.SHIPPED)}
    decoder = None
    if args.lm:  # the agent's reading (ear_lm.py), beside greedy
        import ear_lm

        decoder = ta.lm_decoder(ear_lm.load(None if args.lm == "shipped" else args.lm))
        report["lm"] = str(ear_lm.SHIPPED if args.lm == "shipped" else args.lm)
    for manifest in args.manifest:
        rows = eval_rows(manifest, args.per_speaker)
        cols = {"clean": evaluate(ear, rows)}
        if args.augmented:
            cols["augmented"] = evaluate(ear, rows, AUGMENT_EVAL_SEED)
        if decoder is not None:
            cols["clean_lm"] = evaluate(ear, rows, decoder=decoder)
            if args.augmented:
                cols["augmented_lm"] = evaluate(ear, rows, AUGMENT_EVAL_SEED, decoder)
        report[str(manifest)] = {"clips": len(rows), **cols}
        print(f"\n{manifest}: {len(rows)} clips, CER (greedy; _lm: through the ear's LM)")
        print("| voice | " + " | ".join(cols) + " |")
        print("|---|" + "---:|" * len(cols))
        for voice in cols["clean"]:
            print(f"| {voice} | " + " | ".join(f"{c[voice]:.3f}" for c in cols.values()) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


# --- training ---------------------------------------------------------------------------------------------

def ctc_loss(ear, pcm, targets, target_lengths, input_lengths, frames, speech, augmenter, autocast):
    """CTC per clip (averaged over target characters) + weighted speech BCE over real frames."""
    with autocast:
        log_probs, speech_logits, _ = ear(pcm, spec_augment=augmenter)
    per_clip = F.ctc_loss(log_probs.float().transpose(0, 1), targets.to(log_probs.device), input_lengths,
                          target_lengths, blank=ta.BLANK, reduction="none", zero_infinity=True)
    # Per character, as CTC's "mean"; a clip with nothing to write (speech in another language) is
    # divided by the characters that much Telugu would carry (a quarter of its slots), not by 1, or its
    # hundreds of blank slots would outweigh the whole batch.
    chars = torch.where(target_lengths > 0, target_lengths, input_lengths // 4).clamp_min(1)
    ctc = (per_clip / chars.to(per_clip.device)).mean()
    real = torch.arange(speech.shape[1], device=speech.device)[None] < frames.to(speech.device)[:, None]
    bce = F.binary_cross_entropy_with_logits(speech_logits.float()[real], speech[real])
    return ctc, bce


def export(model: ta.Ear, cfg: Config, path, step: int, minutes: float | None = None) -> None:
    """Shipped weights; the metadata says how far the run had trained: its step and, where the
    run's curve knows it, the minutes of training up to it over all sittings."""
    metadata = {"step": str(step)}
    if minutes is not None:
        metadata["minutes"] = f"{minutes:.1f}"
    ckio.export_safetensors(model.state_dict(), path, cfg, metadata=metadata)


def run_minutes(out_dir, step: int) -> float | None:
    """Minutes of training the run in out_dir spent up to its eval at `step`, over all its sittings
    (curve.jsonl: each eval's minutes_this_sitting; a sitting starts where they go down); None
    without a curve row at that step."""
    path = Path(out_dir) / "curve.jsonl"
    if not path.exists():
        return None
    before, prev, found = 0.0, 0.0, None
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            minutes = float(row["minutes_this_sitting"])
        except (ValueError, KeyError, TypeError):
            continue
        if minutes < prev:  # a new sitting (a resume): the last one's minutes are spent
            before += prev
        prev = minutes
        if row.get("step") == step:
            found = before + minutes  # the latest row at that step (a resumed run may redo steps)
    return found


def export_run(out_dir, dest) -> dict:
    """`--export`: the run's latest weights (out_dir/asr.safetensors) to `dest`, with the step (and
    minutes) they were trained to, from their own metadata (else the latest training checkpoint's
    step and the curve's minutes). Returns the metadata written."""
    from safetensors import safe_open

    src = Path(out_dir) / "asr.safetensors"
    if not src.exists():
        raise SystemExit(f"no {src}: train first")
    with safe_open(str(src), "pt") as f:
        meta = f.metadata() or {}
    step = int(meta["step"]) if meta.get("step", "").isdigit() else None
    if step is None:
        state, _ = ckio.Checkpoints(out_dir).load_latest()
        step = int(state["step"]) if state is not None else 0
    minutes = float(meta["minutes"]) if "minutes" in meta else run_minutes(out_dir, step)
    ear = ta.load(src)
    export(ear, ear.cfg, dest, step, minutes)
    return {"step": step, "minutes": minutes}


def train(args, cfg: Config) -> None:
    tc, a = cfg.train_asr, cfg.asr
    rt = tu.setup_runtime(tc)
    data_dir = Path(cfg.data.data_dir)
    manifests = [data_dir / cfg.data.train_manifest] + [Path(p) for p in args.extra_manifests]
    for m in manifests:
        if not m.exists():
            raise SystemExit(f"no manifest {m}")
    dataset = EarClips(manifests, cfg, tc.seed)
    keep = np.flatnonzero(dataset.durations + 2 * a.pad_s <= a.max_clip_s)
    val_rows = eval_rows(data_dir / cfg.data.val_manifest, args.val_per_speaker)

    ear = ta.Ear(cfg).to(rt.device)
    optimizer = torch.optim.AdamW(ear.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    ckpts = ckio.Checkpoints(tc.out_dir, tc.keep_checkpoints)
    step, epoch, position, best = 0, 0, 0, float("inf")
    state, path = tu.resolve_resume(args.resume, ckpts)
    if state is not None:
        ear.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, epoch, position, best = state["step"], state["epoch"], state["position"], state["best"]
        tu.set_rng_state(state["rng"], rt.rank)
        if rt.is_main:
            print(f"resumed from {path}: step {step}, epoch {epoch}, batch {position}")
    else:
        if args.init:
            ear.load_state_dict(ta.load(args.init).state_dict())
        else:
            mean, std = mel_statistics(ear, dataset)
            ear.mel_mean.copy_(mean)
            ear.mel_std.copy_(std)
    model = ear
    if rt.ddp:
        device_ids = [rt.device.index] if rt.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(ear, device_ids=device_ids)

    def batches_of(ep):
        return [[int(keep[i]) for i in b] for b in
                length_batches(dataset.durations[keep], args.batch_seconds, tc.batch_size, ep, tc.seed, rt.rank,
                               rt.world_size)]

    steps_per_epoch = len(batches_of(0)) // tc.grad_accum
    total_steps = tc.epochs * steps_per_epoch if tc.max_steps <= 0 else min(tc.max_steps, tc.epochs * steps_per_epoch)
    writer = tu.tensorboard(rt, tc.out_dir)
    if rt.is_main:
        print(f"{len(keep)} of {len(dataset)} clips ({dataset.durations[keep].sum() / 3600:.1f} h) in "
              f"{len(manifests)} manifests; {len(val_rows)} val clips; ear "
              f"{sum(p.numel() for p in ear.parameters()) / 1e6:.2f} M params; {steps_per_epoch} steps/epoch; "
              f"device {rt.device}, world {rt.world_size}")
        save_config(cfg, Path(tc.out_dir) / "config.json")

    def save():
        rng = tu.rng_state(rt)
        if rt.is_main:
            ckpts.save({"model": ear.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                        "epoch": epoch, "position": position, "best": best, "rng": rng}, step, cfg)

    augmenter_gen = torch.Generator()  # reseeded per micro-batch from its coordinates: exact resume
    augmenter = spec_augment(a, augmenter_gen)
    bar = tqdm(total=total_steps, initial=step, disable=not rt.is_main, dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 30.0)
    log = defaultdict(float)
    deadline, t0, done = tu.Deadline(tc.max_minutes), time.time(), False
    model.train()
    while not done and step < total_steps:
        batches = batches_of(epoch)
        batches = batches[: min(steps_per_epoch, len(batches) // tc.grad_accum) * tc.grad_accum]  # whole steps
        loader = tu.make_loader(dataset, [[(epoch, i) for i in b] for b in batches[position:]], tc, rt,
                                collate_fn=lambda items: collate(items, cfg.audio.frame_size, a.ctc_per_frame))
        for micro, batch in enumerate(loader, start=position):
            pcm, targets, target_lengths, input_lengths, frames, speech = batch
            last_micro = (micro + 1) % tc.grad_accum == 0
            augmenter_gen.manual_seed(hash((tc.seed, rt.rank, epoch, micro)) % 2**62)
            with tu.sync_gradients(model, last_micro):
                ctc, bce = ctc_loss(model, pcm.to(rt.device), targets, target_lengths, input_lengths, frames,
                                    speech.to(rt.device), augmenter, rt.autocast())
                ((ctc + a.speech_weight * bce) / tc.grad_accum).backward()
            log["ctc"] += ctc.item()
            log["bce"] += bce.item()
            log["n"] += 1
            position = micro + 1
            if not last_micro:
                continue
            tu.set_lr(optimizer, tu.lr_at(step, tc, total_steps, deadline.progress()))
            grad_norm = torch.nn.utils.clip_grad_norm_(ear.parameters(), tc.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            if rt.is_main and step % tc.log_every_steps == 0:
                n = log.pop("n")
                bar.set_postfix(ctc=f"{log['ctc'] / n:.3f}", bce=f"{log['bce'] / n:.3f}")
                writer.add_scalar("train/ctc", log["ctc"] / n, step)
                writer.add_scalar("train/speech_bce", log["bce"] / n, step)
                writer.add_scalar("train/grad_norm", float(grad_norm), step)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
                log.clear()
            stop = deadline.passed(rt) or step >= total_steps
            if step % tc.eval_every_steps == 0 or stop:
                if rt.is_main:
                    cer = evaluate(ear, val_rows)
                    minutes = (time.time() - t0) / 60
                    print(f"\nstep {step}: val CER {cer['all']:.4f} ({minutes:.1f} min this sitting)", flush=True)
                    writer.add_scalar("val/cer", cer["all"], step)
                    with open(Path(tc.out_dir) / "curve.jsonl", "a", encoding="utf-8") as f:
                        f.write(json.dumps({"step": step, "epoch": epoch, "minutes_this_sitting": round(minutes, 2),
                                            "wall": time.time(), "val_cer": cer}) + "\n")
                    spent = run_minutes(tc.out_dir, step)
                    export(ear, cfg, Path(tc.out_dir) / "asr.safetensors", step, spent)
                    if cer["all"] < best:
                        best = cer["all"]
                        export(ear, cfg, Path(tc.out_dir) / "best.safetensors", step, spent)
            if step % tc.save_every_steps == 0 or stop:
                save()
            if stop:
                done = True
                break
        else:
            epoch, position = epoch + 1, 0
    bar.close()
    tu.cleanup(rt)


def main(argv=None) -> int:
    p = add_train_args(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    p.add_argument("--extra_manifests", nargs="*", default=[], help="more training manifests (e.g. the ear corpus)")
    p.add_argument("--batch_seconds", type=float, default=80.0, help="padded audio per batch, seconds")
    p.add_argument("--val_per_speaker", type=int, default=20, help="val clips per voice scored at each eval")
    p.add_argument("--init", help="start from these ear weights (safetensors) with fresh optimizer")
    p.add_argument("--export", help="write the run's latest weights (out_dir/asr.safetensors) here and exit")
    p.add_argument("--eval", action="store_true", help="score --checkpoint on --manifest and exit")
    p.add_argument("--checkpoint", help="with --eval: ear weights (default the shipped ones)")
    p.add_argument("--manifest", nargs="+", default=["data/synthetic/val.jsonl", "data/synthetic/test.jsonl"])
    p.add_argument("--per_speaker", type=int, default=0, help="with --eval: clips per voice (0: all)")
    p.add_argument("--augmented", action="store_true", help="with --eval: also through augment.py, fixed seeds")
    p.add_argument("--lm", help="with --eval: also the CER through the ear's language model (a path, or shipped)")
    p.add_argument("--json", help="with --eval: write the report here")
    args = p.parse_args(argv)
    if args.eval:
        return run_eval(args)
    cfg = config_from_args(args, "train_asr")
    if args.export:
        meta = export_run(cfg.train_asr.out_dir, args.export)
        minutes = "" if meta["minutes"] is None else f", {meta['minutes']:.1f} min"
        print(f"wrote {args.export} (step {meta['step']}{minutes})")
        return 0
    train(args, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
