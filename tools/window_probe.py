"""How well the model hears a request that comes late in a conversation: val-voice clips after
LEAD seconds of silence, transcribed greedily while streaming with an attention window of W frames
(s2s.context_frames). A model trained on 10 s crops has never attended over more than 250 frames.

    python tools/window_probe.py --checkpoint checkpoints/s2s.safetensors --leads 2 14 --windows 250 750
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import s2s_eval  # noqa: E402
import s2s_transformer as s2s  # noqa: E402
import speaker_embeddings  # noqa: E402
import telugu_codec_fixed  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="S2S .safetensors (default: the shipped model)")
    p.add_argument("--sentences", default=str(ROOT / "data" / "synthetic" / "val.jsonl"))
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--leads", type=float, nargs="+", default=[2.0, 14.0], help="seconds of silence before each clip")
    p.add_argument("--windows", type=int, nargs="+", default=[250, 750], help="s2s.context_frames values")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = s2s.load(a.checkpoint)
    codec = telugu_codec_fixed.load(None)
    bank = speaker_embeddings.VoiceBank.load(speaker_embeddings.DEFAULT_CHECKPOINT.parent / "voice_bank.json")
    voice = bank.embedding(bank.names()[0]).numpy()  # as stage-2 validation listens
    clips = s2s_eval.validation_clips(a.sentences, a.clips, codec.sample_rate)
    silence = s2s_eval.silence_codes_of(codec)
    rows = []
    for lead in a.leads:
        pad = np.zeros(int(lead * codec.sample_rate), np.float32)
        late = [dict(c, pcm=np.concatenate([pad, c["pcm"]]),
                     words=[dict(w, start=w["start"] + lead, end=w["end"] + lead) for w in c["words"]])
                for c in clips]
        for window in a.windows:
            model.cfg.context_frames = window  # the streaming KV cache's capacity
            m = s2s_eval.validate_transcription(model, late, model.tokenizer, codec, silence, voice)
            rows.append({"lead_s": lead, "window_frames": window, "cer": round(m["cer"], 4)})
            print(json.dumps(rows[-1]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
