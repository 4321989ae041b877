"""Text-only answering probe: train an exported S2S model on s2s_batching.TextDialogues batches alone
(agent-text loss only, no depth pass, the user silent) and score it with s2s_eval.text_forced.

It asks how fast the temporal transformer learns *what* to answer when nothing else competes for
its steps (docs/experiments.md, "Why the answers fail"). It is a probe, not a training stage: text-only steps
cost the model its hearing (run H in docs/experiments.md), so stage 2 mixes text items in (--text_share).

    python tools/text_probe.py --init runs/s2s_cpu_f/s2s.safetensors --steps 400 --dropout 0.15 --out runs/text_b
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import checkpoint_io as ckio  # noqa: E402
import s2s_batching as sb  # noqa: E402
import s2s_eval  # noqa: E402
import s2s_transformer as s2s  # noqa: E402
import speaker_embeddings  # noqa: E402
import train_s2s as ts  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init", required=True, help="exported S2S weights (.safetensors with its .json)")
    p.add_argument("--out", required=True, help="writes OUT.safetensors (+ .json, telugu_spm.model beside)")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--crop_s", type=float, default=10.0)
    p.add_argument("--noise", type=float, default=0.3, help="s2s.user_text_noise while training")
    p.add_argument("--dropout", type=float, default=0.0, help="--text_word_dropout of the text dialogues")
    p.add_argument("--extra_phrasings", default="", help="--extra_phrasings of the text dialogues (a JSON)")
    p.add_argument("--eval_dialogues", type=int, default=64, help="text_forced on this many, per split")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1234)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    loaded = s2s.load(a.init, tokenizer_path=ROOT / "checkpoints" / "telugu_spm.model")
    cfg, tok = loaded.config, loaded.tokenizer
    cfg.s2s.clock, cfg.s2s.user_text_noise = True, a.noise  # text items carry the moment of their answers
    model = s2s.S2SModel(cfg)
    model.load_state_dict(s2s.fill_missing_clock(model, loaded.state_dict()))
    codec = ts.load_codec(ROOT / "checkpoints" / "codec.safetensors", "cpu")
    bank = speaker_embeddings.VoiceBank.load(ROOT / "checkpoints" / "voice_bank.json")
    silence = s2s_eval.silence_codes_of(codec)
    texts = sb.TextDialogues(tok, codec.sample_rate, model.frame_size,
                             sb.StageSettings(crop_s=a.crop_s, text_word_dropout=a.dropout,
                                                extra_phrasings=a.extra_phrasings), a.seed, bank)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.0)
    only_text = {"user_text": 0, "codebook_0": 0, "codebooks": 0}

    def score(step):
        r = {split: s2s_eval.text_forced(model, codec, bank, tok, a.eval_dialogues, split, seed=7)
             for split in ("heldout_val", "train")}
        print(json.dumps({"step": step, **r}), flush=True)

    score(0)
    model.train()
    t0 = time.time()
    for step in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = a.lr * min(1.0, (step + 1) / 20)
        items = [texts.item(0, np.random.default_rng([a.seed, step, b])) for b in range(a.batch)]
        batch = sb.collate(items, silence, model.voice_in.in_features)
        batch["user"] = sb.batch_user_input(batch, cfg.s2s.user_input, codec, model.n_codebooks)
        loss, parts = model.loss(batch, only_text)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 10 == 0:
            print(f"step {step} agent_text {parts['agent_text'].item():.3f} "
                  f"{(time.time() - t0) / (step + 1):.2f} s/step", flush=True)
    model.eval()
    score(a.steps)
    out = Path(a.out).with_suffix(".safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    ckio.export_safetensors(model.state_dict(), out, cfg)
    (out.parent / "telugu_spm.model").write_bytes((ROOT / "checkpoints" / "telugu_spm.model").read_bytes())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
