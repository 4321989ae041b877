#!/usr/bin/env python3
"""Estimate what each train script costs on one RTX A6000 (48 GB) and what the plan's budget buys.

    python tools/estimate_training.py --config a6000                 # all three scripts, a table
    python tools/estimate_training.py --config a6000 --script codec --json sizing.json
    python tools/estimate_training.py --config a6000 --set train_codec.batch_size=48   # try a size

ESTIMATES, NOT MEASUREMENTS: nothing here runs on a GPU. The method (docs/a6000_sizing.md):

1. Build the script's models at the preset's real sizes on this CPU and run one training step the
   way the script does (same losses, same order) at two small batch sizes, so every figure is
   fitted as `fixed + per_item * batch`. In fp32: an upper bound on the A6000's bf16 activations
   (--probe_bf16 probes under CPU bf16 autocast where the model allows it).
2. FLOPs: torch.utils.flop_counter.FlopCounterMode over forward + backward (matmuls, convolutions,
   attention; elementwise work is not counted, which is what an MFU figure assumes).
3. Activations: the bytes of every tensor autograd saves for backward (saved_tensors_hooks),
   each storage once, parameters excluded. Peak = the largest set alive at one moment (the
   codec's GAN step has three graphs; see `codec_probe`) x TRANSIENT for the gradients in flight
   and allocator slack, plus weights, gradients and AdamW state (16 bytes per trainable
   parameter, fp32), frozen weights (4 bytes) and CUDA_OVERHEAD_GB for the context and workspaces.
4. Step time = the slowest of: FLOPs / (peak bf16 tensor throughput x MFU); memory traffic /
   bandwidth, the traffic taken as TRAFFIC_PER_SAVED_BYTE x the saved activations (written
   forward, read backward, their gradients written and read); and the data loader, items per
   step x seconds per item / num_workers, the seconds per item MEASURED here on this CPU with the
   script's own Dataset (crop reading, resampling, augmentation) over generated WAVs.
   MFU is an assumption, stated per script.
5. Budget: steps = budget hours / step time; what that is in hours of audio and epochs.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import Config, load_config  # noqa: E402

A6000 = {"name": "RTX A6000", "bf16_tflops": 154.8, "memory_gb": 48.0, "bandwidth_gbs": 768.0, "usd_per_h": 0.49}
BUDGET_H = {"codec": 72.0, "speakers": 12.0, "s2s": 72.0}  # the plan's hours on one A6000
# Assumed model FLOP utilisation. Convolutions with Snake activations and STFT discriminators spend
# much time in memory-bound elementwise ops: 25 %. The S2S transformers are small (d512, 9-token
# depth sequences): 35 %, under the ~40 % large transformers reach.
MFU = {"codec": 0.25, "speakers": 0.25, "s2s": 0.35}
TRANSIENT = 1.3  # activation gradients in flight + caching-allocator slack, over the saved tensors
CUDA_OVERHEAD_GB = 1.5  # CUDA context, cuDNN/cuBLAS workspaces
TRAFFIC_PER_SAVED_BYTE = 4  # saved activation: written, read, its gradient written and read
MEMORY_TARGET = 0.85  # a preset "fits" when its estimate stays under 85 % of the card
# Approximate sizes of the corpora download_datasets.sh fetches (publishers' figures; the Telugu
# ones rounded). prepare_speaker_data.py's summary.json, when found, replaces them.
DEFAULT_CORPUS = {"utterances": 99_000, "hours": 183.0, "speakers": 375,
                  "source": "approximate: LibriSpeech clean-100 (100.6 h, 28.5k utt, 251 spk) + VCTK (44 h, "
                            "44k, 110) + LJSpeech (23.9 h, 13.1k, 1) + SLR66 Telugu (~5 h, 4.4k) + IndicTTS "
                            "Telugu (~10 h, ~9k)"}


# --- measuring one step --------------------------------------------------------------------------

class SavedBytes:
    """Bytes autograd saves for backward while active: each storage counted once, parameters
    (and their views) excluded, since they are memory of their own."""

    def __init__(self, params=()):
        self.skip = {p.untyped_storage().data_ptr() for p in params}
        self.seen: dict[int, int] = {}

    def pack(self, t):
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            s = t.untyped_storage()
            if s.data_ptr() not in self.skip:
                self.seen[s.data_ptr()] = max(self.seen.get(s.data_ptr(), 0), s.nbytes())
        return t

    @property
    def total(self) -> int:
        return sum(self.seen.values())

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@dataclass
class Probe:
    """One script's step, fitted as fixed + per_item * batch from two small batches."""
    script: str
    trainable_params: int
    frozen_params: int
    flops_fixed: float
    flops_per_item: float
    saved_fixed: float  # peak saved-for-backward bytes, fixed part (e.g. bf16 copies of weights)
    saved_per_item: float
    item_seconds: float  # audio seconds one item carries
    notes: list[str] = field(default_factory=list)


@dataclass
class LoaderProbe:
    seconds_per_item: float  # one item through the script's Dataset on this CPU, one thread
    workers: int


def _wav_corpus(root: Path, n: int, seconds: float, sr: int = 24000) -> Path:
    """`n` prepared-style clips (24 kHz mono PCM16) with Telugu word timings, and their manifest."""
    import numpy as np

    from audio_io import save_wav, write_manifest

    rng = np.random.default_rng(0)
    words = ["నమస్కారం", "మీరు", "ఎలా", "ఉన్నారు", "నా", "పేరు", "లక్ష్మి", "రెండు"]
    rows = []
    for i in range(n):
        t = np.arange(int(seconds * sr)) / sr
        pcm = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 250) * t) + 0.02 * rng.standard_normal(t.size)
        save_wav(root / f"{i}.wav", pcm.astype(np.float32), sr)
        timed = [{"word": w, "start": 0.2 + 0.6 * k, "end": 0.7 + 0.6 * k}
                 for k, w in enumerate(words * int(seconds // 5 + 1)) if 0.7 + 0.6 * k < seconds]
        rows.append(dict(audio=f"{i}.wav", text=" ".join(w["word"] for w in timed), speaker=f"s{i % 4}",
                         lang="te", duration=seconds, split="train", words=timed))
    write_manifest(root / "train.jsonl", rows)
    return root / "train.jsonl"


def loader_probe(script: str, cfg: Config, workers: int, stage: int = 1, n: int = 12,
                 clip_s: float = 6.7) -> LoaderProbe:
    """Seconds per item of the script's own Dataset (`clip_s`: the prepared corpora's mean clip)."""
    import tempfile
    import time

    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        manifest = _wav_corpus(Path(tmp), 4, clip_s if stage == 1 else 20.0)
        if script == "codec":
            from train_codec_dac import Crops
            segment = int(cfg.train_codec.segment_s * cfg.codec.sample_rate) // cfg.codec.frame_size * cfg.codec.frame_size
            ds = Crops(manifest, segment, cfg.codec.sample_rate, 0)
            get = lambda i: ds[i % len(ds)]  # noqa: E731
        elif script == "speakers":
            from audio_io import ManifestIndex
            from train_speakers import CropDataset
            rows = ManifestIndex(manifest)
            ds = CropDataset(rows, rows.speaker_ids, cfg.speaker, 0, speaker_speeds())
            get = lambda i: ds[(0, i % len(ds))]  # noqa: E731
        elif stage == 1:
            from telugu_tokenizer import Tokenizer
            from s2s_batching import StageSettings
            from train_s2s import Sentences
            ds = Sentences(manifest, Tokenizer.load(ROOT / "checkpoints" / "telugu_spm.model"), cfg.codec.sample_rate,
                           cfg.codec.frame_size, StageSettings(), 0, None)
            get = lambda i: ds[i % len(ds)]  # noqa: E731
        else:  # Dialogues.item: a 16 s crop of the user channel, length-preserving augmentation
            import augment
            import s2s_batching
            path = str(Path(tmp) / "0.wav")
            sr = cfg.codec.sample_rate

            def get(i):
                rng = np.random.default_rng(i)
                pcm = s2s_batching.read_channel(path, 0, int(rng.integers(0, 4 * sr)), 16 * sr, sr)
                return augment.augment(pcm, sr, rng, strength=1.0, effects=augment.LENGTH_PRESERVING)
        get(0)  # imports, first-touch
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            get(i)
        return LoaderProbe((time.perf_counter() - t0) / n, workers)


def fit(b1: int, v1: float, b2: int, v2: float) -> tuple[float, float]:
    per_item = (v2 - v1) / (b2 - b1)
    return max(0.0, v1 - per_item * b1), per_item


PROBE_BF16 = False  # --probe_bf16


def autocast():
    """fp32 by default: CPU autocast keeps other ops in fp32 than CUDA's (the codec's iSTFT head even
    fails under it), so the activations are counted in fp32, an upper bound for bf16 on the GPU."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=PROBE_BF16)


# --- the three scripts' steps ---------------------------------------------------------------------

def codec_probe(cfg: Config, batches=(1, 2)) -> Probe:
    """train_codec_dac.py's step at grad_accum=1 with the GAN on: generator pass (kept), the
    discriminators on fake and real then their step, the generator's mel + VQ + adversarial +
    feature losses through the frozen critic. Alive at once: the generator's graph plus the
    larger of the discriminator step's graph and the generator-loss graph."""
    from discriminator_dac import Discriminator, discriminator_loss, generator_losses
    from spectral import MultiScaleMelLoss
    from telugu_codec_fixed import Codec
    from train_codec_dac import delayed
    from train_utils import frozen

    torch.manual_seed(0)
    model, disc = Codec(cfg.codec), Discriminator(cfg.discriminator)
    mel_loss = MultiScaleMelLoss(cfg.codec.sample_rate, cfg.loss.mel_windows, cfg.loss.mel_bins)
    train = cfg.train_codec
    segment = int(train.segment_s * cfg.codec.sample_rate) // cfg.codec.frame_size * cfg.codec.frame_size
    params = list(model.parameters()) + list(disc.parameters())
    flops, saved = {}, {}
    for b in batches:
        x = 0.1 * torch.randn(b, 1, segment)
        target = delayed(x, model.delay)
        parts = {}

        def step():
            with SavedBytes(params) as s_gen, autocast():
                y, _, _, commitment, codebook = model(x, 1.0)
            y = y.float()
            with SavedBytes(params) as s_disc, autocast():
                loss_d = discriminator_loss(disc(y.detach()), disc(target))
            loss_d.backward()
            with SavedBytes(params) as s_loss:
                loss = cfg.loss.mel_weight * mel_loss(y, target) + commitment + codebook
                with frozen(disc), autocast():
                    with torch.no_grad():
                        d_real = disc(target)
                    adv, feat = generator_losses(disc(y), d_real)
                loss = loss + adv + feat
            loss.backward()
            parts.update(gen=s_gen.total, disc=s_disc.total, loss=s_loss.total)

        flops[b] = count_flops(step)
        saved[b] = parts["gen"] + max(parts["disc"], parts["loss"])
    (b1, b2) = batches
    return Probe("codec", sum(p.numel() for p in params), 0, *fit(b1, flops[b1], b2, flops[b2]),
                 *fit(b1, saved[b1], b2, saved[b2]), segment / cfg.codec.sample_rate,
                 [f"segment {segment / cfg.codec.sample_rate:.2f} s; generator "
                  f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M + discriminators "
                  f"{sum(p.numel() for p in disc.parameters()) / 1e6:.1f} M params",
                  "grad_accum > 1 adds one no-grad generator pass per micro-batch (the rehearsal)"])


def speaker_speeds() -> tuple[float, ...]:
    """train_speakers.py's default --speed_speakers: each is one more copy of every speaker."""
    import train_speakers
    return tuple(train_speakers.parse_args([]).speed_speakers)


def speakers_probe(cfg: Config, n_speakers: int, batches=(2, 4)) -> Probe:
    """train_speakers.py's step: encoder + AAM-softmax head over `n_speakers` classes (the corpus's
    speakers x speeds). BatchNorm needs 2+ items, hence the batches."""
    from train_speakers import SpeakerTrainer

    torch.manual_seed(0)
    model = SpeakerTrainer(cfg.speaker, n_speakers).train()
    n = int(cfg.speaker.segment_s * cfg.speaker.sample_rate)
    flops, saved = {}, {}
    for b in batches:
        pcm, labels = 0.1 * torch.randn(b, n), torch.randint(0, n_speakers, (b,))

        def step():
            with SavedBytes(model.parameters()) as s, autocast():
                loss, _ = model(pcm, labels)
            loss.backward()
            saved[b] = s.total

        flops[b] = count_flops(step)
    (b1, b2) = batches
    return Probe("speakers", sum(p.numel() for p in model.parameters()), 0, *fit(b1, flops[b1], b2, flops[b2]),
                 *fit(b1, saved[b1], b2, saved[b2]), cfg.speaker.segment_s,
                 [f"crop {cfg.speaker.segment_s} s at {cfg.speaker.sample_rate} Hz, {n_speakers} classes"])


def s2s_probe(cfg: Config, frames: int, depth: bool, batches=(1, 2)) -> Probe:
    """train_s2s.py's step on items of `frames` frames: stage 1 (depth=False: transcription, the
    depth transformer skipped) or stage 2 (every stream). The frozen codec sits on the GPU too;
    with user_input latent/codes it also encodes each batch (forward only, counted)."""
    from s2s_transformer import S2SModel
    from telugu_codec_fixed import Codec

    torch.manual_seed(0)
    if not cfg.s2s.text_vocab_size:
        cfg.s2s.text_vocab_size = 1000  # checkpoints/telugu_spm.model
    model = S2SModel(cfg).train()
    codec = Codec(cfg.codec).eval()
    K, fs = cfg.s2s.n_codebooks, cfg.codec.frame_size
    weights = None if depth else {"user_text": 1.0, "agent_text": 0.1, "codebook_0": 0.0, "codebooks": 0.0}
    flops, saved = {}, {}
    for b in batches:
        pcm = 0.1 * torch.randn(b, 1, frames * fs)
        batch = dict(agent_codes=torch.randint(0, cfg.codec.codebook_size, (b, K, frames)),
                     agent_text=torch.randint(0, cfg.s2s.text_vocab_size, (b, frames)),
                     user_text=torch.randint(0, cfg.s2s.text_vocab_size, (b, frames)),
                     voice=torch.randn(b, cfg.speaker.embed_dim), mask=torch.ones(b, frames, dtype=torch.bool))

        def step():
            with torch.no_grad():
                if cfg.s2s.user_input == "mel":
                    batch["user"] = pcm
                else:
                    latent = codec.latent(pcm)
                    batch["user"] = latent if cfg.s2s.user_input == "latent" else codec.quantizer.encode(latent, K)
            with SavedBytes(model.parameters()) as s, autocast():
                loss, _ = model.loss(batch, weights)
            loss.backward()
            saved[b] = s.total

        flops[b] = count_flops(step)
    (b1, b2) = batches
    seconds = frames * fs / cfg.codec.sample_rate
    return Probe("s2s", sum(p.numel() for p in model.parameters()), sum(p.numel() for p in codec.parameters()),
                 *fit(b1, flops[b1], b2, flops[b2]), *fit(b1, saved[b1], b2, saved[b2]), seconds,
                 [f"{'stage 2 (dialogues, all streams)' if depth else 'stage 1 (transcription, no depth)'}: "
                  f"items of {frames} frames ({seconds:.1f} s), user_input {cfg.s2s.user_input}"])


# --- from a probe to the A6000 -------------------------------------------------------------------

def estimate(probe: Probe, batch: int, accum: int, budget_h: float, mfu: float, corpus_items: int | None,
             loader: LoaderProbe | None = None, gpu=A6000) -> dict:
    items = batch * accum
    flops = accum * (probe.flops_fixed + probe.flops_per_item * batch)
    saved = probe.saved_fixed + probe.saved_per_item * batch  # one micro-batch alive at a time
    static = 16 * probe.trainable_params + 4 * probe.frozen_params
    peak = static + TRANSIENT * saved + CUDA_OVERHEAD_GB * 1e9
    t_compute = flops / (gpu["bf16_tflops"] * 1e12 * mfu)
    t_memory = accum * TRAFFIC_PER_SAVED_BYTE * saved / (gpu["bandwidth_gbs"] * 1e9)
    t_loader = items * loader.seconds_per_item / max(1, loader.workers) if loader else 0.0
    step_s = max(t_compute, t_memory, t_loader)
    bound = max((t_compute, "GPU compute"), (t_memory, "GPU memory bandwidth"), (t_loader, "data loader"))[1]
    steps = int(budget_h * 3600 / step_s)
    out = {"script": probe.script, "batch_size": batch, "grad_accum": accum, "items_per_step": items,
           "trainable_params_m": probe.trainable_params / 1e6, "frozen_params_m": probe.frozen_params / 1e6,
           "tflop_per_step": flops / 1e12, "activations_gb": TRANSIENT * saved / 1e9, "static_gb": static / 1e9,
           "peak_gb": peak / 1e9, "fits": peak <= MEMORY_TARGET * gpu["memory_gb"] * 1e9,
           "max_batch_fitting": int((MEMORY_TARGET * gpu["memory_gb"] * 1e9 - static - CUDA_OVERHEAD_GB * 1e9
                                     - TRANSIENT * probe.saved_fixed) // (TRANSIENT * probe.saved_per_item)),
           "mfu": mfu, "gpu_compute_s": t_compute, "gpu_memory_s": t_memory, "loader_s": t_loader,
           "loader_s_per_item": loader.seconds_per_item if loader else None,
           "num_workers": loader.workers if loader else None, "step_s": step_s, "bound": bound,
           "steps_per_hour": 3600 / step_s, "budget_h": budget_h, "budget_usd": budget_h * gpu["usd_per_h"],
           "steps_in_budget": steps, "audio_hours_seen": steps * items * probe.item_seconds / 3600,
           "notes": probe.notes}
    if corpus_items:
        out["corpus_items"] = corpus_items
        out["epochs_in_budget"] = steps * items / corpus_items
    return out


def corpus_figures(data_dir: Path) -> dict:
    summary = data_dir / "summary.json"
    if summary.exists():
        train = json.loads(summary.read_text(encoding="utf-8"))["splits"]["train"]
        return {**train, "source": str(summary)}
    return DEFAULT_CORPUS


def run(cfg: Config, scripts, corpus: dict, s2s_items: int | None, loaders: bool = True) -> list[dict]:
    def loader(script, train, stage=1):
        return loader_probe(script, cfg, train.num_workers, stage) if loaders else None

    rows = []
    if "codec" in scripts:
        t = cfg.train_codec
        rows.append(estimate(codec_probe(cfg), t.batch_size, t.grad_accum, BUDGET_H["codec"], MFU["codec"],
                             corpus["utterances"], loader("codec", t)))
    if "speakers" in scripts:
        t = cfg.train_speakers
        copies = 1 + len(speaker_speeds())  # every speaker at 1.0 and at each extra speed
        rows.append(estimate(speakers_probe(cfg, copies * corpus["speakers"]), t.batch_size, t.grad_accum,
                             BUDGET_H["speakers"], MFU["speakers"], copies * corpus["utterances"], loader("speakers", t)))
    if "s2s" in scripts:
        t = cfg.train_s2s
        rate = cfg.codec.sample_rate / cfg.codec.frame_size
        # Stage 1 items: a sentence (~5 s) + up to 1 s lead + 0.8 s tail; stage 2: 16 s crops.
        stages = [estimate(s2s_probe(cfg, frames, depth), t.batch_size, t.grad_accum, BUDGET_H["s2s"], MFU["s2s"],
                           s2s_items, loader("s2s", t, stage))
                  for stage, frames, depth in ((1, int(6.3 * rate), False), (2, int(16.0 * rate), True))]
        rows += share_budget(stages, BUDGET_H["s2s"])
    return rows


def share_budget(stages: list[dict], hours: float) -> list[dict]:
    """train_s2s.py runs train.max_steps in each stage: the budget buys N steps of both."""
    n = int(hours * 3600 / sum(r["step_s"] for r in stages))
    for r in stages:
        scale = n / r["steps_in_budget"]
        r["steps_in_budget"], r["budget_h"] = n, n * r["step_s"] / 3600
        r["budget_usd"] = r["budget_h"] * A6000["usd_per_h"]
        r["audio_hours_seen"] *= scale
        if "epochs_in_budget" in r:
            r["epochs_in_budget"] *= scale
    return stages


def table(rows: list[dict]) -> str:
    head = ("| script | params (M) | batch x accum | TFLOP/step | peak GB (fits 48 GB?) | max batch | "
            "GPU s/step (MFU) | loader s/step (workers) | s/step | steps in budget | audio h seen | epochs |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        name = r["script"] + (" " + ("stage 1" if "stage 1" in r["notes"][0] else "stage 2") if r["script"] == "s2s" else "")
        epochs = f"{r['epochs_in_budget']:.0f}" if "epochs_in_budget" in r else "-"
        loader = f"{r['loader_s']:.3f} ({r['num_workers']})" if r["num_workers"] is not None else "-"
        lines.append(f"| {name} | {r['trainable_params_m']:.1f} | {r['batch_size']} x {r['grad_accum']} | "
                     f"{r['tflop_per_step']:.2f} | {r['peak_gb']:.1f} ({'yes' if r['fits'] else 'NO'}) | "
                     f"{r['max_batch_fitting']} | {max(r['gpu_compute_s'], r['gpu_memory_s']):.3f} ({r['mfu']:.0%}) | "
                     f"{loader} | {r['step_s']:.3f} | {r['steps_in_budget']:,} "
                     f"({r['budget_h']:.0f} h, ${r['budget_usd']:.0f}) | {r['audio_hours_seen']:,.0f} | {epochs} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="a6000", help="preset in configs/ or a YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--script", choices=["codec", "speakers", "s2s", "all"], default="all")
    p.add_argument("--data_dir", default=str(ROOT / "data" / "prepared"),
                   help="prepared corpus: its summary.json gives the clip and speaker counts")
    p.add_argument("--s2s_items", type=int, help="S2S items per epoch, for the epoch column")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--probe_bf16", action="store_true", help="probe under CPU bf16 autocast (not the codec)")
    p.add_argument("--no_loader", action="store_true", help="skip timing the data loaders")
    p.add_argument("--json", help="also write every figure here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    global PROBE_BF16
    PROBE_BF16 = args.probe_bf16
    cfg = load_config(args.config, args.overrides)
    scripts = ["codec", "speakers", "s2s"] if args.script == "all" else [args.script]
    corpus = corpus_figures(Path(args.data_dir))
    rows = run(cfg, scripts, corpus, args.s2s_items, loaders=not args.no_loader)
    print(f"ESTIMATES for one {A6000['name']} ({A6000['bf16_tflops']} bf16 TFLOP/s peak, {A6000['memory_gb']:.0f} GB, "
          f"${A6000['usd_per_h']}/h), preset {cfg.preset}; not measurements.")
    print(f"corpus: {corpus['utterances']:,} clips, {corpus['hours']:.0f} h, {corpus['speakers']} speakers "
          f"({corpus['source']})\n")
    print(table(rows))
    for r in rows:
        print(f"  {r['script']}: {'; '.join(r['notes'])}; {r['bound']}-bound")
    if args.json:
        Path(args.json).write_text(json.dumps({"gpu": A6000, "corpus": corpus, "assumptions": {
            "mfu": MFU, "transient": TRANSIENT, "cuda_overhead_gb": CUDA_OVERHEAD_GB,
            "traffic_per_saved_byte": TRAFFIC_PER_SAVED_BYTE, "memory_target": MEMORY_TARGET},
            "rows": rows}, indent=2), encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
