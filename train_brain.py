"""Teach the brain (agent_brain.py) the domain in text, and measure what it answers.

    python train_brain.py --config tiny --set train_brain.max_minutes=40      # train (time-boxed)
    python train_brain.py --config tiny --resume                              # go on where it stopped
    python train_brain.py --export checkpoints/brain.safetensors              # ship the run's weights
    python train_brain.py --measure_ear                                       # checkpoints/ear_errors.json
    python train_brain.py --eval --checkpoint checkpoints/brain.safetensors --ear_audio

Training reads endless dialogues of the domain's training split (brain_data.TrainingDialogues: no
held-out phrasing or slot value), their user side corrupted the way the ear corrupts held-out voices.
Every eval_every_steps it scores held-out turns (held-out phrasings and values) with the true
transcript and with simulated ear errors, and appends the figures with the minutes trained to
out_dir/curve.jsonl.

--eval scores a checkpoint per intent group on held-out val and test turns: with the true
transcript, with simulated ear errors and (--ear_audio) with what the real ear hears when held-out
voices say the turn (telugu_tts, augment.py, telugu_asr). --measure_ear runs the ear over the
held-out val voices of the sentence corpus through the augmentation and stores its edit
statistics, which the training's noise replays.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from tqdm import tqdm

import agent_brain as ab
import brain_data as bd
import checkpoint_io as ckio
import dialogue_domain as domain
import train_utils as tu
from audio_io import load_audio, read_manifest
from config import Config, add_train_args, config_from_args, save_config
from telugu_text import asr_text, edit_distance
from telugu_tokenizer import Tokenizer


# --- evaluation ------------------------------------------------------------------------------------

def answer_turns(brain: ab.Brain, turns: list[dict], heard: list[str]) -> list[dict]:
    """Each held-out turn answered in a fresh conversation (after its previous answer, where the
    intent needs one), scored by dialogue_domain.is_correct."""
    rows = []
    for turn, text in zip(turns, heard):
        now = dt.datetime.fromisoformat(turn["now"])
        convo = brain.conversation(now, turn["agent_voice"])
        if turn["previous_answer"]:
            brain.remember(convo, "ఒక ప్రశ్న", turn["previous_answer"])
        a = brain.reply(convo, text)
        ctx = domain.Context(now=now, agent_voice=turn["agent_voice"], previous_answer=turn["previous_answer"])
        rows.append({"intent": turn["intent"], "group": turn["group"], "heard": text, "agent": a.text,
                     "calls": [c.text() for c in a.calls],
                     "correct": domain.is_correct(turn["intent"], turn["slots"], a.text, ctx)})
    return rows


def accuracy(rows: list[dict]) -> dict:
    by = defaultdict(list)
    for r in rows:
        by[r["group"]].append(r["correct"])
        by["all"].append(r["correct"])
        if r["group"] != "arithmetic":
            by["all_but_arithmetic"].append(r["correct"])
    return {k: round(float(np.mean(v)), 4) for k, v in sorted(by.items())}


def simulated(turns, ear: bd.EarErrors | None, seed: int) -> list[str]:
    rng = random.Random(seed)
    clean = [asr_text(t["user_text"]) for t in turns]
    return clean if ear is None else [ear.corrupt(t, rng, 1.0) for t in clean]


def ear_decoder(lm_path):
    """The agent's reading of the ear's output: the LM beam search with ContextConfig's settings
    (None where lm_path is "none" or there is no LM)."""
    import ear_lm
    import telugu_asr

    return telugu_asr.lm_decoder(ear_lm.load_optional(lm_path))


def ear_transcripts(turns: list[dict], split: str, ear_checkpoint=None, seed: int = 0,
                    lm_path=None) -> tuple[list[str], list[str] | None]:
    """What the ear hears when held-out voices of `split` say each turn through the augmentation:
    (greedy transcripts, the LM's readings or None without an LM)."""
    import augment
    import dialogue_corpus
    import telugu_asr
    import telugu_tts

    ear, decoder = telugu_asr.load(ear_checkpoint), ear_decoder(lm_path)
    voices = dialogue_corpus.user_voices(split)
    greedy, read = [], []
    for i, turn in enumerate(tqdm(turns, desc=f"ear on {split}", mininterval=10)):
        voice = voices[i % len(voices)]
        pcm, _ = telugu_tts.synthesize(turn["user_text"], voice)
        pcm = np.concatenate([np.zeros(4800, np.float32), pcm, np.zeros(7200, np.float32)])
        pcm, _, _ = augment.augment(pcm, ear.sample_rate, np.random.default_rng([seed, i]))
        text, log_probs = ear.transcribe(pcm, return_log_probs=True)
        greedy.append(text)
        if decoder is not None:
            read.append(decoder.decode(log_probs))
    return greedy, (read if decoder is not None else None)


def run_eval(args) -> int:
    torch.set_num_threads(args.threads or 1)
    brain = ab.load(args.checkpoint)
    ear_errors = bd.EarErrors.load(args.ear_errors) if Path(args.ear_errors).exists() else None
    report = {"checkpoint": str(args.checkpoint or ab.SHIPPED), "turns_per_split": args.turns}
    for split in args.splits:
        turns = bd.heldout_turns(split, args.turns)
        res = {"true": answer_turns(brain, turns, simulated(turns, None, 0))}
        if ear_errors is not None:
            res["simulated_ear"] = answer_turns(brain, turns, simulated(turns, ear_errors, 1))
        if args.ear_audio:  # "ear": as the agent reads it (with the LM, where there is one)
            greedy, read = ear_transcripts(turns, split, args.ear_checkpoint, lm_path=args.lm)
            res["ear"] = answer_turns(brain, turns, read if read is not None else greedy)
            if read is not None:
                res["ear_greedy"] = answer_turns(brain, turns, greedy)
            for name, texts in (("ear", read or greedy), ("ear_greedy", greedy if read else None)):
                if texts is not None:
                    refs = [asr_text(t["user_text"]) for t in turns]
                    report.setdefault(f"{split}_cer", {})[name] = round(
                        sum(edit_distance(h, r) for h, r in zip(texts, refs)) / sum(map(len, refs)), 4)
        report[split] = {k: accuracy(v) for k, v in res.items()}
        report[split]["examples_wrong"] = [r for r in res.get("ear", res["true"]) if not r["correct"]][:12]
        print(f"\n{split}: {len(turns)} held-out turns (held-out phrasings and values), answers correct"
              + (f"; the ear's CER {report[split + '_cer']}" if split + "_cer" in report else ""))
        groups = sorted({g for acc in report[split].values() if isinstance(acc, dict) for g in acc})
        print(f"{'transcript':<14}" + "".join(f"{g[:12]:>13}" for g in groups))
        for k, acc in report[split].items():
            if isinstance(acc, dict):
                print(f"{k:<14}" + "".join(f"{acc.get(g, float('nan')):>13.3f}" for g in groups))
    if args.json:
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def measure_ear(args) -> int:
    """The ear's edit statistics on held-out val voices, clean and through the augmentation."""
    import augment
    import telugu_asr

    torch.set_num_threads(args.threads or 1)
    ear, decoder = telugu_asr.load(args.ear_checkpoint), ear_decoder(args.lm)
    rows = read_manifest(args.ear_manifest)
    pairs = []
    for i, row in enumerate(tqdm(rows, desc="ear", mininterval=10)):
        pcm = load_audio(row["audio"], ear.sample_rate)
        if i % 2:  # half of them through a room, a microphone and a voice change
            pcm, _, _ = augment.augment(pcm, ear.sample_rate, np.random.default_rng([7, i]))
        text, log_probs = ear.transcribe(pcm, return_log_probs=True)
        pairs.append((asr_text(row["text"]), decoder.decode(log_probs) if decoder is not None else text))
    errors = bd.EarErrors.measure(pairs)
    errors.save(args.ear_errors, ear=str(args.ear_checkpoint or telugu_asr.SHIPPED), manifest=str(args.ear_manifest),
                clips=len(pairs), note="half the clips through augment.py (seed 7, clip index)",
                decoding="greedy" if decoder is None else "ear_lm beam search (ContextConfig)")
    print(f"{len(pairs)} clips, CER {errors.cer:.3f}: wrote {args.ear_errors}")
    return 0


def render_readings(args) -> int:
    """What the agent reads for the requests of training dialogues (brain_data.EarReadings): the
    dialogue's own training voice says each turn (its words less some, as the ear data drops
    them), 80 % through the augmentation, and the ear reads it with its LM. Appends to
    --readings, skipping plans already there, so a killed run goes on where it stopped."""
    import augment
    import dialogue_corpus
    import telugu_asr
    import telugu_tts

    torch.set_num_threads(args.threads or 1)
    ear, decoder = telugu_asr.load(args.ear_checkpoint), ear_decoder(args.lm)
    if decoder is None:
        raise SystemExit("--render_readings reads with the ear's LM: build it (python ear_lm.py build)")
    out = Path(args.readings)
    done = {r["plan"] for r in bd.EarReadings.load(out).rows} if out.exists() else set()
    voices = {v.name: v for v in dialogue_corpus.user_voices("train")}
    seed = 1  # plans apart from the training stream's (seed 0), same split
    with open(out, "a", encoding="utf-8") as f:
        for plan in tqdm(range(args.render_readings), desc="readings", mininterval=10):
            if plan in done:
                continue
            spec = dialogue_corpus.plan_dialogue("train", plan, seed=seed, augment=False)
            rng = random.Random(f"readings:{plan}")
            readings = []
            for k, turn in enumerate(spec["turns"]):
                pcm, _ = telugu_tts.synthesize(turn["user_text"], voices[spec["user_voice"]])
                pcm = np.concatenate([np.zeros(4800, np.float32), pcm, np.zeros(7200, np.float32)])
                if rng.random() < 0.8:
                    pcm, _, _ = augment.augment(pcm, ear.sample_rate, np.random.default_rng([plan, k]))
                _, log_probs = ear.transcribe(pcm, return_log_probs=True)
                readings.append(decoder.decode(log_probs))
            f.write(json.dumps({"plan": plan, "seed": seed, "readings": readings}, ensure_ascii=False) + "\n")
            f.flush()
    print(f"{args.readings}: {len(bd.EarReadings.load(out))} dialogues")
    return 0


# --- training ------------------------------------------------------------------------------------

def export(brain: ab.Brain, cfg: Config, path, step: int, minutes: float) -> None:
    state = {k: v for k, v in brain.state_dict().items() if k != "head.weight"}  # tied to embed.weight
    ckio.export_safetensors(state, path, cfg, metadata={"step": step, "minutes": round(minutes, 1)})


def train(args, cfg: Config) -> None:
    tc, bc = cfg.train_brain, cfg.brain
    rt = tu.setup_runtime(tc)
    vocab = bd.BrainVocab(Tokenizer.load())
    ear_errors = bd.EarErrors.load(args.ear_errors) if Path(args.ear_errors).exists() else None
    if ear_errors is None and rt.is_main:
        print(f"warning: no {args.ear_errors} (train_brain.py --measure_ear): training on clean transcripts")
    readings = bd.EarReadings.load(args.readings) if bc.readings_share > 0 else None
    if readings is not None and rt.is_main:
        print(f"{len(readings)} dialogues as the agent read them ({args.readings}), {bc.readings_share:.0%} of the items")
    data = bd.TrainingDialogues(vocab, ear_errors, tc.seed, bc.train_tokens, bc.max_noise_scale,
                                bc.clean_share, bc.word_dropout, bc.wait_share, readings, bc.readings_share)
    brain = ab.Brain(bc, vocab).to(rt.device)
    optimizer = torch.optim.AdamW(brain.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    ckpts = ckio.Checkpoints(tc.out_dir, tc.keep_checkpoints)
    step, minutes_before, best = 0, 0.0, -1.0
    warm_from = 0  # the step the learning rate's warm-up counts from
    state, path = tu.resolve_resume(args.resume, ckpts)
    if state is not None:
        brain.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, minutes_before, best = state["step"], state["minutes"], state["best"]
        tu.set_rng_state(state["rng"], rt.rank)
        print(f"resumed from {path}: step {step}, {minutes_before:.1f} min trained")
    elif args.init:  # the weights of an exported brain, a fresh optimizer; its step and minutes go on
        brain.load_state_dict(ab.load(args.init).state_dict())
        meta = safe_open(args.init, "pt").metadata() or {}
        step, minutes_before = int(meta.get("step", 0)), float(meta.get("minutes", 0.0))
        warm_from = step  # a fresh optimizer warms up again
        print(f"started from {args.init}: step {step}, {minutes_before:.1f} min trained")
    model = brain
    if rt.ddp:
        model = torch.nn.parallel.DistributedDataParallel(brain, device_ids=[rt.device.index]
                                                          if rt.device.type == "cuda" else None)
    total_steps = tc.max_steps if tc.max_steps > 0 else 10**9
    val_turns = bd.heldout_turns("heldout_val", args.val_turns)
    writer = tu.tensorboard(rt, tc.out_dir)
    if rt.is_main:
        save_config(cfg, Path(tc.out_dir) / "config.json")
        print(f"brain {sum(p.numel() for p in brain.parameters()) / 1e6:.2f} M params, vocab {vocab.size}; "
              f"{len(val_turns)} held-out val turns; device {rt.device}, world {rt.world_size}")
    deadline, t0 = tu.Deadline(tc.max_minutes), time.time()

    def minutes():
        return minutes_before + (time.time() - t0) / 60

    def save():
        if rt.is_main:
            ckpts.save({"model": brain.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                        "minutes": minutes(), "best": best, "rng": tu.rng_state(rt)}, step, cfg)

    bar = tqdm(total=tc.max_steps or None, initial=step, disable=not rt.is_main, dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 30.0)
    log = defaultdict(float)
    model.train()
    while step < total_steps:
        # batch = dialogues (step, rank, row): the data order depends on the step alone (exact resume)
        base = (step * rt.world_size + rt.rank) * tc.batch_size
        ids, w = data.batch(range(base, base + tc.batch_size))
        ids, w = torch.from_numpy(ids).to(rt.device), torch.from_numpy(w).to(rt.device)
        with rt.autocast():
            loss = unwrap_loss(model, brain, ids, w)
        loss.backward()
        tu.set_lr(optimizer, tu.lr_at(step - warm_from, tc, total_steps, deadline.progress()))
        grad_norm = torch.nn.utils.clip_grad_norm_(brain.parameters(), tc.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        log["loss"] += loss.item()
        log["n"] += 1
        if rt.is_main and step % tc.log_every_steps == 0:
            bar.set_postfix(loss=f"{log['loss'] / log['n']:.3f}")
            writer.add_scalar("train/loss", log["loss"] / log["n"], step)
            writer.add_scalar("train/grad_norm", float(grad_norm), step)
            writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
            log.clear()
        stop = deadline.passed(rt) or step >= total_steps
        if rt.is_main and (step % tc.eval_every_steps == 0 or stop):
            brain.eval()
            acc = {"true": accuracy(answer_turns(brain, val_turns, simulated(val_turns, None, 0)))}
            if ear_errors is not None:
                acc["simulated_ear"] = accuracy(answer_turns(brain, val_turns, simulated(val_turns, ear_errors, 1)))
            brain.train()
            m = minutes()
            print(f"\nstep {step} ({m:.1f} min): held-out val answers " +
                  ", ".join(f"{k} {v['all']:.3f} (arithmetic {v.get('arithmetic', 0):.3f})" for k, v in acc.items()),
                  flush=True)
            for k, v in acc.items():
                writer.add_scalar(f"val/{k}", v["all"], step)
            with open(Path(tc.out_dir) / "curve.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, "minutes": round(m, 2), "val": acc}) + "\n")
            export(brain, cfg, Path(tc.out_dir) / "brain.safetensors", step, m)
            score = acc.get("simulated_ear", acc["true"])["all"]
            if score > best:
                best = score
                export(brain, cfg, Path(tc.out_dir) / "best.safetensors", step, m)
        if step % tc.save_every_steps == 0 or stop:
            save()
        if stop:
            break
    bar.close()
    tu.cleanup(rt)


def unwrap_loss(model, brain, ids, w):
    """DDP wraps forward, not loss(): run the wrapped forward so gradients sync, then the loss."""
    if model is brain:
        return brain.loss(ids, w)
    logits = model(ids[:, :-1])
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    return (nll * w[:, 1:]).sum() / w[:, 1:].sum().clamp(min=1.0)


def main(argv=None) -> int:
    p = add_train_args(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    p.add_argument("--val_turns", type=int, default=146, help="held-out val turns scored at each eval (2 per intent)")
    p.add_argument("--ear_errors", default=str(bd.EAR_ERRORS), help="the ear's measured edit statistics")
    p.add_argument("--init", help="start from these brain weights (safetensors) with a fresh optimizer")
    p.add_argument("--export", help="write the run's latest weights (out_dir/brain.safetensors) here and exit")
    p.add_argument("--eval", action="store_true", help="score --checkpoint on held-out turns and exit")
    p.add_argument("--checkpoint", help="with --eval: brain weights (default the shipped ones)")
    p.add_argument("--splits", nargs="+", default=["heldout_val", "heldout_test"])
    p.add_argument("--turns", type=int, default=292, help="with --eval: held-out turns per split (4 per intent)")
    p.add_argument("--ear_audio", action="store_true", help="with --eval: also through the real ear")
    p.add_argument("--ear_checkpoint", help="the ear for --ear_audio / --measure_ear (default the shipped one)")
    p.add_argument("--lm", help="the ear's language model for --ear_audio / --measure_ear (default the shipped "
                   "one; none: greedy)")
    p.add_argument("--render_readings", type=int, metavar="N",
                   help="render the requests of N training dialogues and read them with the ear and its LM "
                        "into --readings, then exit")
    p.add_argument("--readings", default="data/brain_readings.jsonl",
                   help="the agent's readings of training dialogues (brain.readings_share > 0 trains on them)")
    p.add_argument("--measure_ear", action="store_true", help="measure the ear's errors and exit")
    p.add_argument("--ear_manifest", default="data/synthetic/val.jsonl", help="with --measure_ear")
    p.add_argument("--json", help="with --eval: write the report here")
    args = p.parse_args(argv)
    if args.measure_ear:
        return measure_ear(args)
    if args.render_readings:
        return render_readings(args)
    if args.eval:
        return run_eval(args)
    cfg = config_from_args(args, "train_brain")
    if args.export:
        src = Path(cfg.train_brain.out_dir) / "brain.safetensors"
        if not src.exists():
            raise SystemExit(f"no {src}: train first")
        import shutil
        shutil.copyfile(src, args.export)
        shutil.copyfile(src.with_suffix(".json"), Path(args.export).with_suffix(".json"))
        print(f"wrote {args.export} (step and minutes in its metadata)")
        return 0
    train(args, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
