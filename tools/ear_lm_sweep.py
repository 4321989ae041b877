"""Tune and measure the ear's language model (ear_lm.py) on held-out requests: eSpeak's held-out
voices of each split say the held-out turns of train_brain.py --eval (same voices, same rooms:
augment.py with the same seeds), the shipped ear writes CTC log-probs once, and each decoder
setting reads them. Prints CER per setting and split (and, with --brain, the brain's answers);
--json writes the record README's table comes from.

    python tools/ear_lm_sweep.py --turns 146 --brain checkpoints/brain.safetensors --json docs/ear_lm.json
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import augment  # noqa: E402
import brain_data as bd  # noqa: E402
import dialogue_corpus  # noqa: E402
import ear_lm  # noqa: E402
import telugu_asr  # noqa: E402
import telugu_tts  # noqa: E402
from telugu_text import asr_text, edit_distance  # noqa: E402

# (alpha, beta, beam): the LM's weight, the bonus per character, readings kept
GRID = [(0.0, 0.0, 1), (0.3, 0.0, 8), (0.3, 1.0, 8), (0.3, 2.0, 8), (0.5, 2.0, 8), (0.8, 2.0, 8), (0.4, 2.0, 8),
        (0.4, 2.0, 16), (0.4, 2.0, 24), (0.6, 2.5, 16)]


def log_probs_of(ear, turns, split, seed=0):
    """As train_brain.ear_transcripts renders them: (greedy text, CTC log-probs) per turn."""
    voices = dialogue_corpus.user_voices(split)
    out = []
    for i, turn in enumerate(turns):
        pcm, _ = telugu_tts.synthesize(turn["user_text"], voices[i % len(voices)])
        pcm = np.concatenate([np.zeros(4800, np.float32), pcm, np.zeros(7200, np.float32)])
        pcm, _, _ = augment.augment(pcm, ear.sample_rate, np.random.default_rng([seed, i]))
        text, lp = ear.transcribe(pcm, return_log_probs=True)
        out.append((text, lp.numpy()))
    return out


def cer(hyps, refs) -> float:
    return sum(edit_distance(h, r) for h, r in zip(hyps, refs)) / sum(map(len, refs))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--turns", type=int, default=146)
    p.add_argument("--lm", help="default the shipped checkpoints/ear_lm.json")
    p.add_argument("--ear")
    p.add_argument("--brain", help="also score the brain's answers on the greedy text and the best setting")
    p.add_argument("--json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    ear, lm = telugu_asr.load(args.ear), ear_lm.load(args.lm)
    splits = ["heldout_val", "heldout_test"]
    data = {}
    for split in splits:
        turns = bd.heldout_turns(split, args.turns)
        data[split] = (turns, [asr_text(t["user_text"]) for t in turns], log_probs_of(ear, turns, split))
    rows = []
    for alpha, beta, beam in GRID:
        dec = ear_lm.BeamDecoder(lm, telugu_asr.ALPHABET, telugu_asr.BLANK, alpha, beta, beam)
        row = {"alpha": alpha, "beta": beta, "beam": beam}
        t0 = time.perf_counter()
        for split in splits:
            _, refs, outs = data[split]
            hyps = [text if beam == 1 else dec.decode(lp) for text, lp in outs]
            row[split] = round(cer(hyps, refs), 4)
        row["ms_per_request"] = round((time.perf_counter() - t0) * 1000 / sum(len(data[s][1]) for s in splits), 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {"turns_per_split": args.turns, "lm": str(args.lm or ear_lm.SHIPPED), "ear": str(args.ear or telugu_asr.SHIPPED),
              "note": "beam 1 = the greedy transcript; CER against asr_text of the request", "grid": rows}
    if args.brain:
        import agent_brain
        import train_brain

        brain, dec = agent_brain.load(args.brain), telugu_asr.lm_decoder(lm)
        for split in splits:
            turns, _, outs = data[split]
            greedy = train_brain.accuracy(train_brain.answer_turns(brain, turns, [t for t, _ in outs]))
            read = train_brain.accuracy(train_brain.answer_turns(brain, turns, [dec.decode(lp) for _, lp in outs]))
            report[f"{split}_answers"] = {"greedy": greedy, "lm": read}
            print(f"{split}: answers greedy {greedy['all']:.3f}, through the LM {read['all']:.3f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
