"""Train the speaker encoder, calibrate it, export it and build the agent's voice bank.

    python train_speakers.py --data_dir data/synthetic --epochs 50 --num_speakers 4
    torchrun --nproc_per_node 2 train_speakers.py --config a6000 --data_dir data/prepared ...
    python train_speakers.py --eval --checkpoint checkpoints/speaker_encoder.safetensors \
        --manifest data/synthetic/test.jsonl --json eval.json

Training: random crops of D/train.jsonl with light augmentation, additive angular margin softmax
over the training speakers, validation EER on D/val.jsonl (speakers never seen in training). At
the end: the same/different threshold is calibrated at the EER point on val, the encoder is
exported as safetensors + JSON config, and the voice bank is built (see `pick_agent_voices`).

The shipped checkpoints/speaker_encoder.safetensors (+ .json) and checkpoints/voice_bank.json came
from (1,875 steps, about 22 minutes of one CPU core; 47 minutes wall on the shared 2-core machine):

    python train_speakers.py --config tiny --data_dir data/synthetic --epochs 3 --num_speakers 4 \
        --set train_speakers.threads=1

Held-out eSpeak voices, all pairs of 60 utterances each of 4 voices (7,080 target / 21,600
non-target trials): val EER 0.08 %, minDCF(0.01) 0.002; test EER 0.55 %, minDCF 0.018
(resemblyzer on the same trials: 6.78 % / 3.95 %). Real English (tests/data/real_en, one reader):
same-speaker cosine 0.68 on average, so the threshold calibrated on synthetic voices (0.72)
rejects 7 of its 10 same-speaker pairs: real speech needs real training corpora.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm import tqdm

import checkpoint_io as ckio
import train_utils as tu
from audio_io import ManifestIndex, load_audio, read_manifest, resample, to_mono
from config import ROOT, Config, SpeakerConfig, add_train_args, config_from_args, config_json_path, save_config
from speaker_embeddings import (DEFAULT_CHECKPOINT, DEFAULT_VOICE_BANK, SpeakerEncoder, Voice, VoiceBank, load,
                                mean_embedding)

VAL_PER_SPEAKER = 20  # utterances per held-out speaker in periodic validation (all pairs scored)
MAX_EVAL_S = 6.0  # longer utterances are embedded from their first seconds: enough for identity


# --- metrics --------------------------------------------------------------------------------------

def _error_curves(scores, labels):
    """False rejection and false acceptance rates at every threshold between sorted scores, and
    those thresholds. Index k rejects the k lowest scores."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    n_target, n_nontarget = labels.sum(), (~labels).sum()
    if n_target == 0 or n_nontarget == 0:
        raise ValueError("need both target and non-target trials")
    order = np.argsort(scores, kind="mergesort")
    s, lab = scores[order], labels[order]
    frr = np.concatenate([[0.0], np.cumsum(lab) / n_target])
    far = np.concatenate([[1.0], 1.0 - np.cumsum(~lab) / n_nontarget])
    edges = np.concatenate([[s[0] - 1e-3], s, [s[-1] + 1e-3]])
    thresholds = (edges[:-1] + edges[1:]) / 2  # accept scores >= thresholds[k]
    return frr, far, thresholds


def compute_eer(scores, labels) -> tuple[float, float]:
    """Equal error rate and the threshold where it occurs (the two error curves linearly
    interpolated at their crossing)."""
    frr, far, thr = _error_curves(scores, labels)
    k = int(np.argmax(frr >= far))  # first index where rejections catch up with acceptances
    if k == 0 or frr[k] == far[k]:
        return float(frr[k]), float(thr[k])
    d0, d1 = far[k - 1] - frr[k - 1], frr[k] - far[k]
    a = d0 / (d0 + d1)
    return float(frr[k - 1] + a * (frr[k] - frr[k - 1])), float(thr[k - 1] + a * (thr[k] - thr[k - 1]))


def compute_min_dcf(scores, labels, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """Normalised minimum detection cost (NIST SRE): min over thresholds of
    (c_miss * P_miss * p_target + c_fa * P_fa * (1 - p_target)) / min(c_miss * p_target, c_fa * (1 - p_target))."""
    frr, far, _ = _error_curves(scores, labels)
    dcf = c_miss * frr * p_target + c_fa * far * (1 - p_target)
    return float(dcf.min() / min(c_miss * p_target, c_fa * (1 - p_target)))


def pair_trials(speakers: list[str], max_pairs: int = 200_000, seed: int = 0):
    """Index pairs (i, j), i < j, and whether they share a speaker: all pairs, or a seeded sample of
    `max_pairs` when there are more (target pairs are kept whole, they are the scarce kind)."""
    n = len(speakers)
    i, j = np.triu_indices(n, k=1)
    spk = np.asarray(speakers)
    same = spk[i] == spk[j]
    if len(i) > max_pairs:
        rng = np.random.default_rng(seed)
        target = np.nonzero(same)[0]
        others = np.nonzero(~same)[0]
        keep_other = rng.choice(others, size=max(1, max_pairs - min(len(target), max_pairs // 2)), replace=False)
        keep_target = target if len(target) <= max_pairs // 2 else rng.choice(target, max_pairs // 2, replace=False)
        keep = np.sort(np.concatenate([keep_target, keep_other]))
        i, j, same = i[keep], j[keep], same[keep]
    return i, j, same


def verification_metrics(embeddings: np.ndarray, speakers: list[str], max_pairs: int = 200_000) -> dict:
    i, j, same = pair_trials(speakers, max_pairs)
    scores = np.sum(embeddings[i] * embeddings[j], axis=1)
    eer, thr = compute_eer(scores, same)
    return {"eer": eer, "threshold": thr, "min_dcf": compute_min_dcf(scores, same),
            "n_target": int(same.sum()), "n_nontarget": int((~same).sum()),
            "n_utterances": len(speakers), "n_speakers": len(set(speakers))}


# --- data -----------------------------------------------------------------------------------------

def read_crop(path: str, seconds: float, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """`seconds` of a file from a random offset, read without loading the whole file; a shorter
    file is repeated (speaker identity does not care about continuity)."""
    with sf.SoundFile(path) as f:
        sr, total = f.samplerate, f.frames
        want = int(math.ceil(seconds * sr))
        if total > want:
            f.seek(int(rng.integers(0, total - want + 1)))
            pcm = f.read(want, dtype="float32", always_2d=False)
        else:
            pcm = f.read(dtype="float32", always_2d=False)
    pcm = to_mono(pcm)
    if len(pcm) < want:
        pcm = np.tile(pcm, int(math.ceil(want / max(1, len(pcm)))))[:want]
    return pcm, sr


def augment(pcm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gain and additive noise (white or pink) at a random SNR: the encoder should hear the voice,
    not the level or the floor. Speed/pitch is applied while resampling (see CropDataset)."""
    pcm = pcm * np.float32(10 ** (rng.uniform(-6, 6) / 20))
    if rng.random() < 0.6:
        noise = rng.standard_normal(len(pcm)).astype(np.float32)
        if rng.random() < 0.5:  # pink: integrate white noise in the frequency domain
            spec = np.fft.rfft(noise)
            spec /= np.sqrt(np.arange(1, len(spec) + 1))
            noise = np.fft.irfft(spec, n=len(pcm)).astype(np.float32)
        snr_db = rng.uniform(5, 40)
        p_sig = float(np.mean(pcm**2)) + 1e-10
        p_noise = float(np.mean(noise**2)) + 1e-10
        pcm = pcm + noise * np.float32(math.sqrt(p_sig / p_noise / 10 ** (snr_db / 10)))
    return np.clip(pcm, -1, 1)


class CropDataset(Dataset):
    """Items are addressed as (epoch, index): the crop and augmentation of an item come from
    `item_rng(seed, epoch, index)`, so a resumed run sees exactly the data it would have seen.

    With `speed_speakers` (e.g. 0.85, 0.92, 1.08, 1.15) every utterance also appears at those speeds as a
    different speaker (Kaldi's speed-perturbation recipe): ten percent moves pitch and formants as
    far as a different vocal tract would, and multiplies the speakers a small corpus offers. Within a
    class, a few percent of speed change keeps the label, so pitch alone is not identity."""

    def __init__(self, rows: Sequence[dict], labels: Sequence[int], cfg: SpeakerConfig, seed: int,
                 speed_speakers: tuple[float, ...] = (), max_speed_change: float = 0.04):
        # rows: a ManifestIndex (read on demand) or a list; labels: one speaker id per row
        self.rows, self.labels, self.cfg, self.seed = rows, np.asarray(labels, dtype=np.int64), cfg, seed
        self.speeds = (1.0, *speed_speakers)
        self.n_base = int(self.labels.max()) + 1
        self.n_speakers = self.n_base * len(self.speeds)
        self.max_speed_change = max_speed_change
        self.n_samples = int(cfg.segment_s * cfg.sample_rate)

    def __len__(self):
        return len(self.rows) * len(self.speeds)

    def __getitem__(self, key):
        epoch, index = key
        rng = tu.item_rng(self.seed, epoch, index)
        variant, row_index = divmod(index, len(self.rows))
        row = self.rows[row_index]
        speed = self.speeds[variant]
        if rng.random() < 0.7:
            speed *= 1.0 + rng.uniform(-self.max_speed_change, self.max_speed_change)
        pcm, sr = read_crop(row["audio"], self.cfg.segment_s * speed + 0.05, rng)
        # Reading at sr / speed plays the crop `speed` times faster: pitch and formants scale with it.
        pcm = resample(pcm, int(round(sr / speed)), self.cfg.sample_rate)[: self.n_samples]
        if len(pcm) < self.n_samples:
            pcm = np.pad(pcm, (0, self.n_samples - len(pcm)))
        label = variant * self.n_base + int(self.labels[row_index])
        return torch.from_numpy(augment(pcm, rng)), label


def eval_rows(rows: Sequence[dict], per_speaker: int, seed: int = 0) -> list[dict]:
    """A fixed, seeded choice of at most `per_speaker` utterances of each speaker. From a
    ManifestIndex only the chosen rows are read."""
    if isinstance(rows, ManifestIndex):
        names, ids = rows.speakers, rows.speaker_ids
    else:
        names = sorted({r["speaker"] for r in rows})
        id_of = {name: i for i, name in enumerate(names)}
        ids = np.array([id_of[r["speaker"]] for r in rows], dtype=np.int64)
    # Each speaker's rows in manifest order, speakers in sorted order.
    members = np.split(np.argsort(ids, kind="stable"), np.cumsum(np.bincount(ids, minlength=len(names)))[:-1])
    rng = np.random.default_rng(seed)
    chosen = []
    for rows_of_speaker in members:
        idx = rng.permutation(len(rows_of_speaker))[:per_speaker] if per_speaker > 0 else range(len(rows_of_speaker))
        chosen.extend(rows[int(rows_of_speaker[k])] for k in sorted(idx))
    return chosen


def embed_rows(encoder: SpeakerEncoder, rows: list[dict], max_s: float = MAX_EVAL_S, progress=False) -> np.ndarray:
    out = []
    for r in tqdm(rows, desc="embed", disable=not progress, leave=False):
        pcm = load_audio(r["audio"], encoder.sample_rate)[: int(max_s * encoder.sample_rate)]
        out.append(encoder.embed(pcm, encoder.sample_rate))
    return np.stack(out)


# --- model for training ---------------------------------------------------------------------------

class AAMSoftmax(nn.Module):
    """Additive angular margin softmax (ArcFace): the target logit is s * cos(theta + m)."""

    def __init__(self, embed_dim: int, n_classes: int, margin: float, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, embed_dim) * 0.01)
        self.margin, self.scale = margin, scale

    def forward(self, emb, labels):
        cos = F.linear(F.normalize(emb.float(), dim=-1), F.normalize(self.weight.float(), dim=-1))
        sin = (1.0 - cos.square()).clamp(min=1e-7).sqrt()
        target = cos * math.cos(self.margin) - sin * math.sin(self.margin)
        # Past theta = pi - m, cos(theta + m) stops decreasing; ArcFace's linear fallback keeps it monotonic.
        target = torch.where(cos > math.cos(math.pi - self.margin), target,
                             cos - math.sin(math.pi - self.margin) * self.margin)
        one_hot = F.one_hot(labels, cos.shape[1]).bool()
        logits = self.scale * torch.where(one_hot, target, cos)
        accuracy = (cos.argmax(dim=1) == labels).float().mean()
        return F.cross_entropy(logits, labels), accuracy


class SpeakerTrainer(nn.Module):
    """Encoder + training head in one module, so DDP wraps (and syncs) both."""

    def __init__(self, cfg: SpeakerConfig, n_speakers: int):
        super().__init__()
        self.encoder = SpeakerEncoder(cfg)
        self.head = AAMSoftmax(cfg.embed_dim, n_speakers, cfg.margin, cfg.scale)

    def forward(self, pcm, labels):
        return self.head(self.encoder(pcm), labels)


# --- the voice bank -------------------------------------------------------------------------------

def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def pick_agent_voices(rows: Iterable[dict], num_speakers: int) -> list[tuple[str, str, str]]:
    """(name, gender, source) of the agent's voices. With the synthetic corpus: the catalogue's
    voices whose role is "agent" (telugu_tts), those with audio in the manifests. With real corpora
    (no catalogue voice has audio): the training speakers with the most audio, alternating genders
    where gender is known, so the page offers both."""
    present = {r["speaker"] for r in rows}
    try:
        import telugu_tts

        catalogue = [v for v in telugu_tts.voices("agent") if v.name in present]
    except ImportError:
        catalogue = []
    if catalogue:
        return [(v.name, v.gender, f"telugu_tts:{v.variant}") for v in catalogue[:num_speakers]]

    seconds, gender = defaultdict(float), {}
    for r in rows:
        if r.get("split", "train") == "train":
            seconds[r["speaker"]] += float(r["duration"])
            gender.setdefault(r["speaker"], r.get("gender") or "unknown")
    by_gender = defaultdict(list)
    for spk in sorted(seconds, key=lambda s: (-seconds[s], s)):
        by_gender[gender[spk]].append(spk)
    queues = [by_gender[g] for g in sorted(by_gender, key=lambda g: -seconds[by_gender[g][0]])]
    picked = []
    while len(picked) < num_speakers and any(queues):
        for q in queues:
            if q and len(picked) < num_speakers:
                picked.append(q.pop(0))
    return [(s, gender[s], f"corpus:{s}") for s in picked]


class ManifestRows:
    """The rows of several manifests, streamed again on every pass (nothing kept in memory)."""

    def __init__(self, paths):
        self.paths = [Path(p) for p in paths if Path(p).exists()]

    def __iter__(self) -> Iterator[dict]:
        return itertools.chain.from_iterable(read_manifest(p) for p in self.paths)


def build_voice_bank(encoder: SpeakerEncoder, rows: Iterable[dict], num_speakers: int, n_enrol: int,
                     checkpoint: str, seed: int = 0) -> VoiceBank:
    """`rows` is iterated twice: once to pick the voices, once to gather their utterances."""
    bank = VoiceBank(encoder=_relative(checkpoint))
    picked = pick_agent_voices(rows, num_speakers)
    utterances = {name: [] for name, _, _ in picked}
    for r in rows:
        if r["speaker"] in utterances:
            utterances[r["speaker"]].append(r)
    for name, gender, source in picked:
        enrol = eval_rows(utterances[name], n_enrol, seed)
        emb = mean_embedding(list(embed_rows(encoder, enrol)))
        bank.add(Voice(name=name, gender=gender, source=source,
                       enrolment=[_relative(r["audio"]) for r in enrol], embedding=emb.tolist()))
    return bank


# --- training -------------------------------------------------------------------------------------

def validate(encoder: SpeakerEncoder, val_rows: list[dict]) -> dict:
    was_training = encoder.training
    encoder.eval()
    metrics = verification_metrics(embed_rows(encoder, val_rows), [r["speaker"] for r in val_rows])
    encoder.train(was_training)
    return metrics


def index_split(data_dir: Path, name: str) -> ManifestIndex:
    path = data_dir / name
    if not path.exists():
        raise SystemExit(f"no manifest {path}")
    return ManifestIndex(path)


def train(args, cfg: Config) -> None:
    tc = cfg.train_speakers
    rt = tu.setup_runtime(tc)
    data_dir = Path(cfg.data.data_dir)
    train_rows = index_split(data_dir, cfg.data.train_manifest)  # rows stay on disk, read per item
    if not len(train_rows):
        raise SystemExit(f"{data_dir / cfg.data.train_manifest}: no utterances")
    val_rows = eval_rows(index_split(data_dir, cfg.data.val_manifest), VAL_PER_SPEAKER)
    speakers = train_rows.speakers  # sorted; speaker_ids index into it
    overlap = set(speakers) & {r["speaker"] for r in val_rows}
    if overlap and rt.is_main:
        print(f"warning: {len(overlap)} val speakers also in train; val EER is then optimistic")

    dataset = CropDataset(train_rows, train_rows.speaker_ids, cfg.speaker, tc.seed, tuple(args.speed_speakers))
    model = SpeakerTrainer(cfg.speaker, dataset.n_speakers).to(rt.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    ckpts = ckio.Checkpoints(tc.out_dir, tc.keep_checkpoints)
    step, epoch, position = 0, 0, 0  # position: micro-batches of `epoch` already trained on
    state, path = tu.resolve_resume(args.resume, ckpts)
    if state is not None:
        if state["speakers"] != speakers or state.get("speeds", [1.0]) != list(dataset.speeds):
            raise SystemExit(f"{path} was trained on other speakers than {data_dir}/{cfg.data.train_manifest}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, epoch, position = state["step"], state["epoch"], state["position"]
        tu.set_rng_state(state["rng"], rt.rank)
        if rt.is_main:
            print(f"resumed from {path}: step {step}, epoch {epoch}, batch {position}")
    raw_model = model
    if rt.ddp:
        device_ids = [rt.device.index] if rt.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if tc.compile:
        model = torch.compile(model)

    micro_per_epoch = len(tu.epoch_batches(len(dataset), tc.batch_size, 0, tc.seed, rt.rank, rt.world_size))
    steps_per_epoch = tu.optimizer_steps_per_epoch(micro_per_epoch, tc.grad_accum)
    total_steps = tc.epochs * steps_per_epoch
    if tc.max_steps > 0:
        total_steps = min(total_steps, tc.max_steps)

    writer = tu.tensorboard(rt, tc.out_dir)
    if rt.is_main:
        n_params = sum(p.numel() for p in raw_model.encoder.parameters())
        print(f"{len(train_rows)} utterances of {len(speakers)} speakers x {len(dataset.speeds)} speeds; "
              f"{len(val_rows)} val utterances; "
              f"encoder {n_params / 1e6:.2f} M params; {steps_per_epoch} steps/epoch of "
              f"{tc.batch_size} x {tc.grad_accum} x {rt.world_size} crops, {total_steps} steps; "
              f"device {rt.device}, world {rt.world_size}")
        save_config(cfg, Path(tc.out_dir) / "config.json")

    def save():
        rng = tu.rng_state(rt)  # every rank's: a collective, so every rank calls save()
        if rt.is_main:
            ckpts.save({"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                        "epoch": epoch, "position": position, "rng": rng, "speakers": speakers,
                        "speeds": list(dataset.speeds)}, step, cfg)

    # In a log file (nohup) a progress line every few seconds is enough.
    bar = tqdm(total=total_steps, initial=step, disable=not rt.is_main, dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 30.0)
    model.train()
    window_loss, window_acc, window_n, t_window = 0.0, 0.0, 0, time.time()
    deadline, done = tu.Deadline(tc.max_minutes), False
    while not done and step < total_steps and epoch < tc.epochs:
        batches = tu.epoch_batches(len(dataset), tc.batch_size, epoch, tc.seed, rt.rank, rt.world_size)
        batches = batches[: steps_per_epoch * tc.grad_accum]  # whole optimizer steps only
        loader = tu.make_loader(dataset, [[(epoch, i) for i in b] for b in batches[position:]], tc, rt)
        for micro, (pcm, labels) in enumerate(loader, start=position):
            pcm, labels = pcm.to(rt.device, non_blocking=True), labels.to(rt.device, non_blocking=True)
            last_micro = (micro + 1) % tc.grad_accum == 0
            # Each micro-batch adds 1 / grad_accum of its loss; DDP averages on the last one only.
            with tu.sync_gradients(model, last_micro):
                with rt.autocast():
                    loss, acc = model(pcm, labels)
                (loss / tc.grad_accum).backward()
            window_loss, window_acc, window_n = window_loss + loss.item(), window_acc + acc.item(), window_n + 1
            position = micro + 1
            if not last_micro:
                continue
            lr = tu.lr_at(step, tc, total_steps, deadline.progress())
            tu.set_lr(optimizer, lr)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            if rt.is_main and (step % tc.log_every_steps == 0 or step == total_steps):
                loss_avg, acc_avg = window_loss / window_n, window_acc / window_n
                writer.add_scalar("train/loss", loss_avg, step)
                writer.add_scalar("train/accuracy", acc_avg, step)
                writer.add_scalar("train/lr", lr, step)
                writer.add_scalar("train/grad_norm", float(grad_norm), step)
                writer.add_scalar("train/seconds_per_step", (time.time() - t_window) / window_n * tc.grad_accum, step)
                bar.set_postfix(loss=f"{loss_avg:.3f}", acc=f"{acc_avg:.3f}", lr=f"{lr:.2e}")
                window_loss, window_acc, window_n, t_window = 0.0, 0.0, 0, time.time()
            if rt.is_main and step % tc.eval_every_steps == 0:
                m = validate(raw_model.encoder, val_rows)
                writer.add_scalar("val/eer", m["eer"], step)
                writer.add_scalar("val/min_dcf", m["min_dcf"], step)
                bar.write(f"step {step}: val EER {100 * m['eer']:.2f} %  minDCF {m['min_dcf']:.3f}")
            if step % tc.save_every_steps == 0:
                save()
            if step >= total_steps or deadline.passed(rt):
                done = True
                break
        else:  # the epoch ran to its end
            epoch, position = epoch + 1, 0
            if tc.save_every and epoch % tc.save_every == 0:
                save()
    bar.close()
    save()
    if rt.is_main:
        finish(args, cfg, raw_model.encoder, train_rows, val_rows, writer, step)
        writer.close()
    tu.cleanup(rt)


def finish(args, cfg: Config, encoder: SpeakerEncoder, train_rows, val_rows, writer, step: int) -> None:
    """Export, calibrate the threshold on what was exported (fp16 weights), build the voice bank."""
    export = Path(args.export)
    ckio.export_safetensors(encoder.state_dict(), export, cfg, fp16=True,
                          metadata={"step": step, "command": " ".join(sys.argv)})
    shipped = load(export)
    m = validate(shipped, val_rows)
    cfg.speaker.threshold = round(m["threshold"], 4)
    save_config(cfg, config_json_path(export))
    shipped.cfg.threshold = cfg.speaker.threshold
    writer.add_scalar("val/eer_exported", m["eer"], step)
    print(f"exported {export}: val EER {100 * m['eer']:.2f} %, minDCF {m['min_dcf']:.3f}, "
          f"threshold {cfg.speaker.threshold} (calibrated at the EER point)")

    data_dir = Path(cfg.data.data_dir)
    all_rows = ManifestRows([train_rows.path] + [data_dir / name for name in (cfg.data.val_manifest, cfg.data.test_manifest)])
    bank = build_voice_bank(shipped, all_rows, args.num_speakers, args.enrol, str(export), cfg.train_speakers.seed)
    bank.save(args.voice_bank)
    print(f"voice bank {args.voice_bank}: {', '.join(f'{v.name} ({v.gender})' for v in bank.voices.values())}")


# --- evaluation -----------------------------------------------------------------------------------

def _resemblyzer_embedder():
    """Resemblyzer's pretrained d-vector encoder, if the package can be imported; else why not."""
    try:
        from resemblyzer import VoiceEncoder, preprocess_wav
    except Exception as e:  # ImportError, or its own dependencies failing to import
        return None, f"{type(e).__name__}: {e}"
    enc = VoiceEncoder("cpu", verbose=False)

    def embed(pcm16k: np.ndarray) -> np.ndarray:
        return enc.embed_utterance(preprocess_wav(pcm16k, source_sr=16000))

    return embed, None


def _real_speech_trials(emb_real: np.ndarray, emb_synth: np.ndarray, threshold: float | None = None) -> dict:
    """Same-speaker trials among the real clips (one reader) against different-speaker trials of
    each real clip versus each synthetic held-out utterance."""
    i, j = np.triu_indices(len(emb_real), k=1)
    same = np.sum(emb_real[i] * emb_real[j], axis=1)
    diff = (emb_real @ emb_synth.T).ravel()
    scores = np.concatenate([same, diff])
    labels = np.concatenate([np.ones_like(same, bool), np.zeros_like(diff, bool)])
    eer, thr = compute_eer(scores, labels)
    result = {"eer": eer, "threshold_at_eer": thr, "n_target": len(same), "n_nontarget": len(diff),
              "same_mean": float(same.mean()), "same_min": float(same.min()),
              "diff_mean": float(diff.mean()), "diff_max": float(diff.max())}
    if threshold is not None:  # the shipped threshold, for the encoder that owns it
        result["frr_at_threshold"] = float(np.mean(same < threshold))
        result["far_at_threshold"] = float(np.mean(diff >= threshold))
    return result


def evaluate(args) -> dict:
    torch.set_num_threads(args.threads or 1)
    encoder = load(args.checkpoint)
    rows = eval_rows(ManifestIndex(args.manifest), args.per_speaker)
    speakers = [r["speaker"] for r in rows]
    t0 = time.time()
    emb = embed_rows(encoder, rows, progress=True)
    result = {"checkpoint": str(args.checkpoint or DEFAULT_CHECKPOINT), "manifest": str(args.manifest),
              "threshold": encoder.threshold, "encoder": verification_metrics(emb, speakers, args.max_pairs)}
    # Errors at the shipped threshold, not only at this set's own EER point.
    i, j, same = pair_trials(speakers, args.max_pairs)
    scores = np.sum(emb[i] * emb[j], axis=1)
    result["encoder"]["frr_at_threshold"] = float(np.mean(scores[same] < encoder.threshold))
    result["encoder"]["far_at_threshold"] = float(np.mean(scores[~same] >= encoder.threshold))
    result["encoder"]["embed_seconds"] = time.time() - t0

    real_files = sorted(Path(args.real_dir).glob("*.wav")) if args.real_dir else []
    pcm_real = [load_audio(f, encoder.sample_rate) for f in real_files]
    if pcm_real:
        emb_real = np.stack([encoder.embed(p, encoder.sample_rate) for p in pcm_real])
        result["real_en"] = {"files": [_relative(f) for f in real_files],
                             "encoder": _real_speech_trials(emb_real, emb, encoder.threshold)}

    if args.resemblyzer:
        embed_rz, why = _resemblyzer_embedder()
        if embed_rz is None:
            result["resemblyzer"] = {"error": why}
        else:
            pcm_rows = [load_audio(r["audio"], 16000)[: int(MAX_EVAL_S * 16000)] for r in rows]
            emb_rz = np.stack([embed_rz(p) for p in tqdm(pcm_rows, desc="resemblyzer", leave=False)])
            result["resemblyzer"] = verification_metrics(emb_rz, speakers, args.max_pairs)
            if pcm_real:
                emb_rz_real = np.stack([embed_rz(load_audio(f, 16000)) for f in real_files])
                result.setdefault("real_en", {})["resemblyzer"] = _real_speech_trials(emb_rz_real, emb_rz)
    return result


def print_report(result: dict) -> None:
    def line(name, m):
        print(f"  {name:<12} EER {100 * m['eer']:6.2f} %   minDCF(0.01) {m['min_dcf']:.3f}   "
              f"{m['n_target']} target / {m['n_nontarget']} non-target trials")

    e = result["encoder"]
    print(f"{result['manifest']}: {e['n_utterances']} utterances of {e['n_speakers']} speakers")
    line("ours", e)
    print(f"  {'':<12} at the shipped threshold {result['threshold']:.3f}: "
          f"FRR {100 * e['frr_at_threshold']:.2f} %, FAR {100 * e['far_at_threshold']:.2f} %")
    rz = result.get("resemblyzer")
    if rz and "error" in rz:
        print(f"  resemblyzer  unavailable: {rz['error']}")
    elif rz:
        line("resemblyzer", rz)
    for name, m in result.get("real_en", {}).items():
        if name == "files":
            continue
        print(f"  real_en {name:<12} same-speaker {m['same_mean']:.3f} (min {m['same_min']:.3f}) vs "
              f"real-vs-synthetic {m['diff_mean']:.3f} (max {m['diff_max']:.3f}); EER {100 * m['eer']:.2f} % "
              f"over {m['n_target']} + {m['n_nontarget']} trials")


# --- command line ---------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = add_train_args(argparse.ArgumentParser(description=__doc__,
                                                    formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("--num_speakers", type=int, default=4, help="agent voices in the voice bank")
    parser.add_argument("--speed_speakers", type=float, nargs="*", default=[0.85, 0.92, 1.08, 1.15],
                        help="speeds at which every training speaker also counts as a new speaker (none: off)")
    parser.add_argument("--enrol", type=int, default=20, help="enrolment utterances per agent voice")
    parser.add_argument("--export", default=str(DEFAULT_CHECKPOINT), help="where the shipped encoder goes")
    parser.add_argument("--voice_bank", default=str(DEFAULT_VOICE_BANK))
    ev = parser.add_argument_group("evaluation (--eval)")
    ev.add_argument("--eval", action="store_true", help="evaluate a checkpoint instead of training")
    ev.add_argument("--checkpoint", help="encoder .safetensors (default: the shipped one)")
    ev.add_argument("--manifest", help="JSONL of held-out speakers")
    ev.add_argument("--json", help="also write the figures here")
    ev.add_argument("--per_speaker", type=int, default=50, help="utterances per speaker (0: all)")
    ev.add_argument("--max_pairs", type=int, default=200_000, help="trials beyond this are a seeded sample")
    ev.add_argument("--real_dir", default=str(ROOT / "tests" / "data" / "real_en"),
                    help="real speech of ONE speaker (out-of-domain check); '' to skip")
    ev.add_argument("--resemblyzer", action="store_true", help="score the same trials with resemblyzer")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.eval:
        if not args.manifest:
            raise SystemExit("--eval needs --manifest")
        result = evaluate(args)
        print_report(result)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
        return
    train(args, config_from_args(args, "train_speakers"))


if __name__ == "__main__":
    main()
