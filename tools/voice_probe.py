"""What the codec does to the four agent voices: each voice's own rendered answers
(data/dialogues/agent_answers/<voice>/) through a codec round trip, then their pitch against the
original's (pYIN, codec_eval.f0_track) and the speaker encoder's identification of the decoded
audio against the voice bank. Voice match in s2s_eval.py cannot beat what this finds.

    python tools/voice_probe.py [--checkpoint checkpoints/codec.safetensors | runs/X/step_N.pt] [--clips 8]
"""
import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import codec_eval  # noqa: E402
import speaker_embeddings  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="codec .safetensors or training step_*.pt (default: the shipped codec)")
    p.add_argument("--answers", default=str(ROOT / "data" / "dialogues" / "agent_answers"))
    p.add_argument("--clips", type=int, default=8, help="answers per voice (from the 21st on)")
    p.add_argument("--json", help="write the report here")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    codec = codec_eval.load_codec(a.checkpoint)
    encoder, bank = speaker_embeddings.load(), speaker_embeddings.VoiceBank.load()
    sr, report = codec.sample_rate, {}
    for voice in bank.names():
        files = sorted(glob.glob(f"{a.answers}/{voice}/*.wav"))[20:20 + a.clips]
        if not files:
            raise SystemExit(f"no answers for {voice} under {a.answers} (dialogue_corpus.py renders them)")
        cents, voicing, named = [], [], []
        for path in files:
            x = sf.read(path, dtype="float32")[0]
            with torch.no_grad():
                y = codec.decode(codec.encode(torch.from_numpy(x).view(1, 1, -1)))[0, 0].numpy()
            y = y[codec.delay:codec.delay + len(x)]
            fx, fy = codec_eval.f0_track(x[:len(y)], sr), codec_eval.f0_track(y, sr)
            both = ~np.isnan(fx) & ~np.isnan(fy)
            cents.append(np.abs(1200 * np.log2(fy[both] / fx[both])))
            voicing.append(float(np.mean(np.isnan(fx) == np.isnan(fy))))
            named.append(bank.identify(encoder.embed(y, sr))[0])
        c = np.concatenate(cents)
        report[voice] = {"f0_error_cents_median": round(float(np.median(c)), 1) if len(c) else None,
                         "within_50_cents": round(float(np.mean(c < 50)), 3) if len(c) else 0.0,
                         "voicing_agreement": round(float(np.mean(voicing)), 3),
                         "identified_as": named, "identified_right": sum(n == voice for n in named)}
        print(f"{voice}: F0 error median {report[voice]['f0_error_cents_median']} cents, "
              f"{report[voice]['within_50_cents']:.2f} within 50 cents, voicing agreement "
              f"{report[voice]['voicing_agreement']:.2f}, identified right {report[voice]['identified_right']}/{len(named)}")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
