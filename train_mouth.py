"""Train the agent's mouth (agent_mouth.py): agent text -> pitch-codec frames in one of four voices.

    python train_mouth.py --prepare                      # eSpeak audio of every sentence + domain answer
                                                         # in each agent voice -> codec targets, data/mouth/
    python train_mouth.py --config tiny --resume --set train_mouth.max_minutes=40
    python train_mouth.py --export checkpoints/mouth.safetensors --out_dir runs/mouth
    python train_mouth.py --eval --checkpoint checkpoints/mouth.safetensors

Every loss is dense and per frame (PROBES.md): the codec's continuous envelope latent (L1), the
pitch of each 10 ms patch (L1 in octaves where voiced) and voicing (BCE), and each symbol's
duration in frames (MSE of log(1 + frames)). Targets come from the codec's own analysis of eSpeak's
audio; durations from eSpeak's word events (see `symbol_durations`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent
DATA_DIR = ROOT / "data" / "mouth"
SENTENCES = ROOT / "data" / "telugu_sentences.tsv"
AGENT_VOICES = ("lakshmi", "priya", "ravi", "kiran")
SPLITS = ("train", "val", "test")


# --- what the mouth learns to say -----------------------------------------------------------------

def corpus_texts(sentences_path=SENTENCES, answer_draws: int = 20000, seed: int = 0) -> dict[str, list[str]]:
    """Texts per split. Sentences: the synthetic corpus's own held-out split (10 % per category,
    seed 0), so no sentence a listener model was tested on is trained here; its held-out half with
    even index is val, odd is test. Domain answers: every distinct agent answer of `answer_draws`
    training turns (train), and the held-out turns' answers that training never produced (val)."""
    import dialogue_domain
    import synthetic_corpus

    sentences = synthetic_corpus.read_sentences(sentences_path)
    train, heldout = synthetic_corpus.split_sentences(sentences, 0.1, seed)
    texts = {"train": [s.text for s in train], "val": [s.text for s in heldout[0::2]],
             "test": [s.text for s in heldout[1::2]]}
    rng = random.Random(seed)
    answers = sorted({dialogue_domain.sample_turn(rng, "train").agent_text for _ in range(answer_draws)})
    seen = set(answers) | set(texts["train"])
    rng = random.Random(seed + 1)
    heldout_answers = sorted({dialogue_domain.sample_turn(rng, "heldout").agent_text
                              for _ in range(answer_draws // 4)} - seen)
    texts["train"] += answers
    texts["val"] += heldout_answers[:100]
    return texts


@torch.no_grad()
def codec_targets(codec, pcms: list[np.ndarray]) -> list[dict]:
    """Per clip: the codec's continuous envelope latent before the RVQ [latent, T] (fp16), the
    pitch code [T] and the envelope codes [K-1, T]. Clips are analysed in one padded batch: the
    analysis is causal, so a clip's frames do not see the zeros after it."""
    frames = [-(-len(p) // codec.frame_size) for p in pcms]
    batch = torch.zeros(len(pcms), 1, max(frames) * codec.frame_size)
    for i, p in enumerate(pcms):
        batch[i, 0, :len(p)] = torch.from_numpy(p)
    z, pitch, _ = codec._analyse(batch)
    codes = codec.quantizer.encode(z, codec.n_codebooks - 1)
    return [{"latent": z[i, :, :n].half().clone(), "pitch": pitch[i, :n].to(torch.int16).clone(),
             "codes": codes[i, :, :n].to(torch.int16).clone()} for i, n in enumerate(frames)]


def prepare(out_dir=DATA_DIR, voices=AGENT_VOICES, codec_path=None, limit: int = 0, texts=None,
            batch: int = 8) -> list[Path]:
    """eSpeak audio of every text in each voice -> data/mouth/{voice}_{split}.pt with, per clip,
    the spoken text (telugu_tts.spoken_text), the word spans and timings, and the codec targets."""
    import telugu_codec_fixed
    import telugu_tts
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    codec = telugu_codec_fixed.load(codec_path or ROOT / "checkpoints" / "codec_pitch.safetensors")
    texts = texts or corpus_texts()
    written = []
    for voice in voices:
        for split, items in texts.items():
            items = items[:limit] if limit else items
            path = out_dir / f"{voice}_{split}.pt"
            if path.exists():
                written.append(path)
                continue
            clips = []
            for text in tqdm(items, desc=f"{voice} {split}", mininterval=10, file=sys.stdout):
                pcm, words = telugu_tts.synthesize(text, voice)
                spoken = telugu_tts.spoken_text(text)
                clips.append({"text": text, "spoken": spoken, "pcm": pcm,
                              "spans": [list(s) for s in telugu_tts._tokens(spoken)],
                              "times": [[w["start"], w["end"]] for w in words]})
            order = sorted(range(len(clips)), key=lambda i: len(clips[i]["pcm"]))
            for k in range(0, len(order), batch):
                idx = order[k:k + batch]
                for i, t in zip(idx, codec_targets(codec, [clips[i]["pcm"] for i in idx])):
                    clips[i].update(t)
                    del clips[i]["pcm"]
            tmp = path.with_name(path.name + ".tmp")
            torch.save({"voice": voice, "split": split, "clips": clips}, tmp)
            os.replace(tmp, path)
            written.append(path)
            print(f"wrote {path}: {len(clips)} clips", flush=True)
    return written



# --- durations from eSpeak's word events ------------------------------------------------------------

# Weights for sharing a word's frames among its characters: a virama only removes the inherent
# vowel, a vowel sign lengthens the consonant it sits on, an anusvara is a short nasal.
VIRAMA, VOWEL_SIGNS, NASALS = "\u0c4d", set(map(chr, range(0x0C3E, 0x0C4D))) | {"\u0c55", "\u0c56", "\u0c62", "\u0c63"}, \
    {"\u0c00", "\u0c01", "\u0c02", "\u0c03"}


def char_weight(ch: str) -> float:
    return 0.3 if ch == VIRAMA else 0.7 if ch in VOWEL_SIGNS else 0.5 if ch in NASALS else 1.0


def symbol_durations(spoken: str, spans, times, n_frames: int, frame_s: float = 0.04) -> list[int]:
    """Frames per symbol of agent_mouth.encode_text(spoken) (^, characters, $), summing to n_frames.

    Word boundaries come from eSpeak's own WORD events (sample-exact, refined by energy in
    telugu_tts.word_timings), so they are right by construction; within a word the frames are
    shared among its characters by `char_weight` with running rounding. The share inside a word is
    a fixed function of the word and its length, so the encoder (which sees the whole word) can
    learn where each sound really falls. The pause between two words belongs to the first
    character after the first word (a comma or the space), the silence before the first word to ^
    and after the last to $."""
    bounds = [(min(n_frames, round(a / frame_s)), min(n_frames, round(b / frame_s))) for a, b in times]
    durations = [0] * (len(spoken) + 2)
    prev_end, gap_owner = 0, -1  # gap_owner: symbol index that takes the pause before the next word
    for (c0, c1), (f0, f1) in zip(spans, bounds):
        f0 = max(f0, prev_end)
        f1 = max(f1, f0)
        durations[gap_owner + 1] += f0 - prev_end  # ^ (gap_owner -1) before the first word
        w = np.array([char_weight(ch) for ch in spoken[c0:c1]])
        ends = np.round(np.cumsum(w) / w.sum() * (f1 - f0)).astype(int)
        for i, d in enumerate(np.diff(ends, prepend=0)):
            durations[c0 + i + 1] = int(d)
        gap_owner, prev_end = c1, f1  # spoken[c1] follows the word (a space or a mark)
    durations[-1] += n_frames - prev_end  # $ holds the closing pause; marks at the very end get 0
    assert sum(durations) == n_frames, (sum(durations), n_frames)
    return durations


# --- data ------------------------------------------------------------------------------------------

class MouthData:
    """Every clip of some shards in memory: symbols, durations and the frame targets."""

    def __init__(self, paths, codec):
        import agent_mouth
        self.items = []
        for path in paths:
            shard = torch.load(path, weights_only=True)
            for clip in shard["clips"]:
                spoken, ids = agent_mouth.encode_text(clip["spoken"])
                if spoken != clip["spoken"]:
                    raise ValueError(f"{path}: spoken form changed since --prepare: {clip['spoken']!r}")
                T = clip["latent"].shape[1]
                pitch = clip["pitch"].long()
                f0 = codec.pitch.decode(pitch[None])[0].view(T, -1)
                octaves = torch.log2(f0.clamp(min=codec.cfg.f0_min) / codec.cfg.f0_min)
                self.items.append({
                    "voice": shard["voice"], "text": clip["text"], "symbols": torch.tensor(ids),
                    "durations": torch.tensor(symbol_durations(spoken, clip["spans"], clip["times"], T)),
                    "latent": clip["latent"], "octaves": octaves.half(), "voiced": pitch > 0})
        self.frames = np.array([it["latent"].shape[1] for it in self.items])

    def batches(self, epoch: int, seed: int, max_items: int, max_frames: int) -> list[list[int]]:
        """Clips of similar length together (little padding), batches in a seeded order per epoch:
        the same epoch always gives the same batches, so --resume continues exactly."""
        rng = np.random.default_rng([seed, epoch])
        order = np.argsort(self.frames + rng.uniform(0, 8, len(self.frames)), kind="stable")
        out, cur = [], []
        for i in order:
            if cur and (len(cur) >= max_items or (len(cur) + 1) * self.frames[i] > max_frames):
                out.append(cur)
                cur = []
            cur.append(int(i))
        if cur:
            out.append(cur)
        return [out[i] for i in rng.permutation(len(out))]

    def collate(self, idx: list[int], voice_of) -> dict:
        items = [self.items[i] for i in idx]
        S = max(len(it["symbols"]) for it in items)
        T = max(it["latent"].shape[1] for it in items)
        B = len(items)
        latent_dim, patches = items[0]["latent"].shape[0], items[0]["octaves"].shape[1]
        out = {"symbols": torch.zeros(B, S, dtype=torch.long), "durations": torch.zeros(B, S, dtype=torch.long),
               "latent": torch.zeros(B, latent_dim, T), "octaves": torch.zeros(B, T, patches),
               "voiced": torch.zeros(B, T), "frame_mask": torch.zeros(B, T, dtype=torch.bool),
               "voice": torch.stack([voice_of(it["voice"]) for it in items])}
        for b, it in enumerate(items):
            s, t = len(it["symbols"]), it["latent"].shape[1]
            out["symbols"][b, :s], out["durations"][b, :s] = it["symbols"], it["durations"]
            out["latent"][b, :, :t] = it["latent"].float()
            out["octaves"][b, :t] = it["octaves"].float()
            out["voiced"][b, :t] = it["voiced"].float()
            out["frame_mask"][b, :t] = True
        out["symbol_mask"] = out["symbols"] != 0
        return out


def losses(model, batch, cfg) -> dict:
    """The four dense losses of one batch (true durations drive the frame decoder)."""
    m = cfg.mouth
    latent, octaves, voicing, log_dur = model(batch["symbols"], batch["symbol_mask"], batch["voice"],
                                              batch["durations"])
    fm = batch["frame_mask"].float()
    n_frames = fm.sum().clamp(min=1)
    l_latent = ((latent - batch["latent"]).abs().mean(1) * fm).sum() / n_frames
    voiced = batch["voiced"] * fm
    l_f0 = ((octaves - batch["octaves"]).abs().mean(-1) * voiced).sum() / voiced.sum().clamp(min=1)
    l_voicing = (F.binary_cross_entropy_with_logits(voicing, batch["voiced"], reduction="none") * fm).sum() / n_frames
    sm = batch["symbol_mask"].float()
    l_dur = ((log_dur - torch.log1p(batch["durations"].float())) ** 2 * sm).sum() / sm.sum()
    total = m.latent_weight * l_latent + m.f0_weight * l_f0 + m.voicing_weight * l_voicing + m.duration_weight * l_dur
    return {"total": total, "latent": l_latent, "f0": l_f0, "voicing": l_voicing, "duration": l_dur}


# --- evaluation --------------------------------------------------------------------------------------

class Judges:
    """What the mouth is measured with: the ear (round-trip CER), the speaker encoder and its voice
    bank (voice identified), and eSpeak through the codec (the ceiling and the reference pitch)."""

    def __init__(self):
        import speaker_embeddings
        import telugu_asr
        self.ear = telugu_asr.load()
        self.speaker = speaker_embeddings.load()
        self.bank = speaker_embeddings.VoiceBank.load()

    def judge(self, pcm: np.ndarray, sample_rate: int) -> tuple[str, str]:
        text, _ = self.ear.transcribe(torch.from_numpy(pcm))
        voice, _ = self.bank.identify(self.speaker.embed(pcm, sample_rate))
        return text, voice


@torch.no_grad()
def evaluate(mouth, texts: list[str], voices, judges: Judges, reference: bool = False, pitch: bool = False,
             progress: bool = False) -> dict:
    """Per voice: round-trip CER (the ear reads the mouth's audio; references in asr_text form),
    voice identified, and with `pitch` the F0 RMSE in cents against eSpeak through the codec's
    pitch analysis (the mouth driven by eSpeak's own durations, so frames line up); with
    `reference` the same CER and voice figures for eSpeak's audio through the codec (the ceiling)."""
    import telugu_text
    from tqdm import tqdm

    codec, sr = mouth.codec, mouth.codec.sample_rate
    report = {}
    for voice in voices:
        refs, hyps, ref_hyps, hits, ref_hits, cents = [], [], [], 0, 0, []
        for text in tqdm(texts, desc=voice, disable=not progress, mininterval=10, file=sys.stdout):
            codes, _ = mouth.synthesize(text, voice)
            pcm = codec.decode(codes[None])[0, 0].numpy()
            hyp, heard_voice = judges.judge(pcm, sr)
            refs.append(telugu_text.asr_text(text))
            hyps.append(hyp)
            hits += heard_voice == voice
            if reference or pitch:
                import telugu_tts
                ref_pcm, words = telugu_tts.synthesize(text, voice)
                ref_codes = codec.encode(torch.from_numpy(ref_pcm))
                if reference:
                    ref_hyp, ref_voice = judges.judge(codec.decode(ref_codes)[0, 0].numpy(), sr)
                    ref_hyps.append(ref_hyp)
                    ref_hits += ref_voice == voice
                if pitch:
                    cents.append(pitch_error(mouth, text, voice, ref_codes[0], words))
        row = {"clips": len(texts), "cer": telugu_text.cer(refs, hyps), "voice_identified": hits / len(texts)}
        if reference:
            row.update(espeak_codec_cer=telugu_text.cer(refs, ref_hyps), espeak_codec_voice=ref_hits / len(texts))
        if pitch:
            sq = np.concatenate([c for c in cents if c.size])
            row["f0_rmse_cents"] = float(np.sqrt(np.mean(sq ** 2))) if sq.size else float("nan")
            row["f0_median_cents"] = float(np.median(np.abs(sq))) if sq.size else float("nan")
            row["pitch_accuracy"] = float(np.mean(np.abs(sq) < 50)) if sq.size else float("nan")  # codec_eval's
        report[voice] = row
    return report


def pitch_error(mouth, text, voice, ref_codes, words) -> np.ndarray:
    """Cents between the mouth's F0 and eSpeak's (both through the pitch code), on the patches
    voiced in both, with the mouth following eSpeak's durations."""
    import agent_mouth
    import telugu_tts
    spoken, ids = agent_mouth.encode_text(text)
    T = ref_codes.shape[1]
    durations = torch.tensor([symbol_durations(spoken, telugu_tts._tokens(spoken),
                                               [[w["start"], w["end"]] for w in words], T)])
    v = mouth.voice_embeddings([voice])
    states, _ = mouth.encode(torch.tensor([ids]), v)
    x, _ = mouth.frame_inputs(states, durations, v)
    codes = mouth.to_codes(*mouth.frame_outputs(x)[:3])[0]
    f_mouth = mouth.codec.pitch.decode(codes[:1])[0]
    f_ref = mouth.codec.pitch.decode(ref_codes[:1])[0]
    both = (f_mouth > 0) & (f_ref > 0)
    return (1200 * torch.log2(f_mouth[both] / f_ref[both])).numpy()


@torch.no_grad()
def frame_cost(mouth, text: str, voice: str, frames: int = 100) -> dict:
    """Milliseconds per 40 ms frame on this thread: mouth.step, and the codec's decode_step."""
    codec = mouth.codec
    state = mouth.init_state(1, [voice])
    cstate = codec.init_state(1)
    while sum(len(u.inputs) for u in state.queue[0]) < frames:
        mouth.say(state, 0, text)
    step_ms, decode_ms = [], []
    for _ in range(frames):
        t = time.perf_counter()
        codes, _, state = mouth.step(state)
        t1 = time.perf_counter()
        _, cstate = codec.decode_step(codes[:, :, None], cstate)
        t2 = time.perf_counter()
        step_ms.append((t1 - t) * 1e3)
        decode_ms.append((t2 - t1) * 1e3)
    return {"mouth_step_ms_p50": float(np.median(step_ms)), "codec_decode_ms_p50": float(np.median(decode_ms)),
            "total_ms_p50": float(np.median(np.add(step_ms, decode_ms))),
            "total_ms_p95": float(np.percentile(np.add(step_ms, decode_ms), 95))}


# --- training ------------------------------------------------------------------------------------------

def export(model, cfg, path, step: int, minutes: float, command: str) -> None:
    from checkpoint_io import export_safetensors, codec_hash
    state = {k: v for k, v in model.state_dict().items()}
    export_safetensors(state, path, cfg, fp16=False,
                       metadata={"step": step, "train_minutes": round(minutes, 2), "command": command,
                                 "codec_sha": codec_hash(ROOT / cfg.mouth.codec_checkpoint)})


def train(args, cfg) -> None:
    import agent_mouth
    import train_utils as tu
    from checkpoint_io import Checkpoints
    from config import save_config
    from tqdm import tqdm

    tc = cfg.train_mouth
    torch.set_num_threads(max(1, tc.threads))
    tu.seed_everything(tc.seed)
    out_dir = Path(tc.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = agent_mouth.build(cfg)
    codec = model.codec
    data_dir = Path(args.data)
    shards = [data_dir / f"{v}_train.pt" for v in cfg.mouth.voices]
    missing = [str(p) for p in shards if not p.exists()]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run python train_mouth.py --prepare first")
    data = MouthData(shards, codec)
    val_texts = [t for t in corpus_texts()["val"]][: args.val_texts] if args.val_texts else []
    voice_index = {v: i for i, v in enumerate(cfg.mouth.voices)}
    voice_of = lambda name: model.voice_table[voice_index[name]]  # noqa: E731
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    ckpts = Checkpoints(out_dir, keep=tc.keep_checkpoints)
    step, epoch, position, minutes_before, best = 0, 0, 0, 0.0, float("inf")
    resumed, path = tu.resolve_resume(args.resume, ckpts)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        step, epoch, position = resumed["step"], resumed["epoch"], resumed["position"]
        minutes_before, best = resumed["minutes"], resumed["best"]
        tu.set_rng_state(resumed["rng"])
        print(f"resumed from {path}: step {step}, epoch {epoch}, batch {position}, {minutes_before:.1f} min before")
    else:  # the output head starts at the data's mean frame: the first steps need not find it
        with torch.no_grad():
            bias = model.head[-1].bias
            bias[:model.latent_dim] = torch.cat([it["latent"].float() for it in data.items[::20]], 1).mean(1)
            voiced = torch.cat([it["octaves"][it["voiced"]].float() for it in data.items[::20]])
            bias[model.latent_dim:-1] = voiced.mean()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{len(data.items)} clips ({data.frames.sum() * 0.04 / 3600:.1f} h) of {len(shards)} voices; mouth "
          f"{n_params / 1e6:.2f} M params; lr {tc.lr}; {tc.max_minutes} min budget", flush=True)
    save_config(cfg, out_dir / "config.json")
    writer = tu.tensorboard(tu.setup_runtime(tc), out_dir) if not args.no_tensorboard else None
    command = "python " + " ".join([Path(sys.argv[0]).name] + sys.argv[1:])
    deadline, t0 = tu.Deadline(tc.max_minutes), time.time()
    total_steps = tc.max_steps or 10 ** 9
    minutes = lambda: minutes_before + (time.time() - t0) / 60  # noqa: E731

    def save():
        ckpts.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "epoch": epoch,
                    "position": position, "minutes": minutes(), "best": best, "rng": tu.rng_state()}, step, cfg)

    def validate():
        nonlocal best
        model.eval()
        report = evaluate(model, val_texts, cfg.mouth.voices, judges)
        model.train()
        cer = float(np.mean([r["cer"] for r in report.values()]))
        voice = float(np.mean([r["voice_identified"] for r in report.values()]))
        print(f"\nstep {step}, {minutes():.1f} min: val round-trip CER {cer:.3f}, voice {voice:.2f}", flush=True)
        if writer:
            writer.add_scalar("val/cer", cer, step)
            writer.add_scalar("val/voice", voice, step)
        with open(out_dir / "curve.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "minutes": round(minutes(), 2), "val_cer": round(cer, 4),
                                "val_voice": round(voice, 4), "clips": len(val_texts) * len(cfg.mouth.voices),
                                "per_voice": report}, ensure_ascii=False) + "\n")
        export(model, cfg, out_dir / "mouth.safetensors", step, minutes(), command)
        if cer < best:
            best = cer
            export(model, cfg, out_dir / "best.safetensors", step, minutes(), command)

    judges = Judges() if val_texts else None
    bar = tqdm(initial=step, dynamic_ncols=True, mininterval=0.1 if sys.stderr.isatty() else 30.0)
    log, last_eval, done = {}, time.time(), False
    model.train()
    while not done:
        batches = data.batches(epoch, tc.seed, tc.batch_size, args.batch_frames)
        for i in range(position, len(batches)):
            batch = data.collate(batches[i], voice_of)
            tu.set_lr(optimizer, tu.lr_at(step, tc, total_steps, deadline.progress()))
            out = losses(model, batch, cfg)
            optimizer.zero_grad(set_to_none=True)
            out["total"].backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            optimizer.step()
            step, position = step + 1, i + 1
            bar.update(1)
            for k, v in out.items():
                log[k] = log.get(k, 0.0) + v.item()
            log["n"] = log.get("n", 0) + 1
            if step % tc.log_every_steps == 0:
                n = log.pop("n")
                bar.set_postfix({k: f"{v / n:.3f}" for k, v in log.items()})
                if writer:
                    for k, v in log.items():
                        writer.add_scalar(f"train/{k}", v / n, step)
                    writer.add_scalar("train/grad_norm", float(grad_norm), step)
                    writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
                log = {}
            stop = deadline.passed() or step >= total_steps
            if stop or step % tc.save_every_steps == 0:
                save()
            if val_texts and (stop or time.time() - last_eval >= args.eval_minutes * 60):
                validate()
                last_eval = time.time()
                save()
            if stop:
                done = True
                break
        else:
            epoch, position = epoch + 1, 0
    bar.close()
    if writer:
        writer.close()
    if not val_texts:
        export(model, cfg, out_dir / "mouth.safetensors", step, minutes(), command)


def run_eval(args) -> int:
    import agent_mouth
    torch.set_num_threads(1)
    mouth = agent_mouth.load(args.checkpoint)
    texts = corpus_texts()[args.split]
    texts = texts[: args.limit] if args.limit else texts
    judges = Judges()
    report = evaluate(mouth, texts, mouth.m.voices, judges, reference=True, pitch=True, progress=True)
    cost = frame_cost(mouth, texts[0], mouth.m.voices[0])
    allv = {k: float(np.mean([r[k] for r in report.values()])) for k in next(iter(report.values())) if k != "clips"}
    print(f"\n{args.split}: {len(texts)} texts per voice, never trained on; checkpoint {args.checkpoint}")
    print("| voice | round-trip CER | voice identified | F0 within 50 cents | F0 median / RMSE (cents) "
          "| eSpeak via codec: CER | voice |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for v, r in list(report.items()) + [("**all**", allv)]:
        print(f"| {v} | {r['cer']:.3f} | {r['voice_identified']:.3f} | {r['pitch_accuracy']:.3f} | "
              f"{r['f0_median_cents']:.0f} / {r['f0_rmse_cents']:.0f} | {r['espeak_codec_cer']:.3f} | "
              f"{r['espeak_codec_voice']:.3f} |")
    print("| target | <= 0.10 | >= 0.95 | | | | |")
    print(f"per frame, one thread: mouth step {cost['mouth_step_ms_p50']:.2f} ms + codec decode "
          f"{cost['codec_decode_ms_p50']:.2f} ms = {cost['total_ms_p50']:.2f} ms p50 ({cost['total_ms_p95']:.2f} p95)")
    if args.json:
        from safetensors import safe_open
        with safe_open(str(args.checkpoint or agent_mouth.SHIPPED), "pt") as f:
            meta = f.metadata() or {}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"split": args.split, "texts_per_voice": len(texts),
                                               "checkpoint": str(args.checkpoint), "meta": meta, "per_voice": report,
                                               "all": allv, "frame_cost": cost,
                                               "command": "python " + " ".join(["train_mouth.py"] + sys.argv[1:])},
                                              ensure_ascii=False, indent=1), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def main(argv=None):
    from config import add_train_args, config_from_args
    ap = add_train_args(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    ap.add_argument("--prepare", action="store_true", help="synthesise and analyse the training data, then exit")
    ap.add_argument("--voices", nargs="+", default=list(AGENT_VOICES), help="with --prepare")
    ap.add_argument("--limit", type=int, default=0, help="with --prepare / --eval: at most this many texts a split")
    ap.add_argument("--data", default=str(DATA_DIR), help="folder of the prepared shards")
    ap.add_argument("--answer_draws", type=int, default=20000, help="with --prepare: domain turns drawn for answers")
    ap.add_argument("--batch_frames", type=int, default=3000, help="padded frames per batch, at most")
    ap.add_argument("--val_texts", type=int, default=10, help="val texts per voice at each validation (0: none)")
    ap.add_argument("--eval_minutes", type=float, default=5.0, help="validate every this many minutes")
    ap.add_argument("--no_tensorboard", action="store_true")
    ap.add_argument("--export", help="write the run's latest weights (out_dir/mouth.safetensors) here and exit")
    ap.add_argument("--from_run", default="mouth.safetensors", help="with --export: which file of the run")
    ap.add_argument("--eval", action="store_true", help="score --checkpoint on held-out texts and exit")
    ap.add_argument("--checkpoint", help="with --eval: mouth weights (default checkpoints/mouth.safetensors)")
    ap.add_argument("--split", default="test", choices=SPLITS, help="with --eval")
    ap.add_argument("--json", help="with --eval: write the report here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.prepare:
        texts = corpus_texts(answer_draws=args.answer_draws)
        if args.limit:
            texts = {k: v[:args.limit] for k, v in texts.items()}
        prepare(args.data, args.voices, texts=texts)
        return 0
    if args.eval:
        return run_eval(args)
    cfg = config_from_args(args, "train_mouth")
    if args.export:
        import shutil
        from config import config_json_path
        src = Path(cfg.train_mouth.out_dir) / args.from_run
        if not src.exists():
            raise SystemExit(f"no {src}: train first")
        Path(args.export).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, args.export)
        shutil.copyfile(config_json_path(src), config_json_path(args.export))
        print(f"wrote {args.export}")
        return 0
    train(args, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
