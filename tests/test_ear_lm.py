"""The ear's language model (ear_lm.py): a normalised character n-gram, and a CTC prefix beam
search that reads what greedy decoding gets wrong, the same streamed as whole."""
import math
import random

import numpy as np
import pytest

import ear_lm
import telugu_asr as ta

TEXTS = ["ఈ రోజు తారీఖు ఎంత", "ఈ రోజు ఏ వారం", "సమయం ఎంత అయింది", "నీ పేరు ఏమిటి", "రేపు ఏ వారం"]


@pytest.fixture(scope="module")
def lm():
    return ear_lm.CharLM.count(TEXTS, order=5)


def test_the_lm_is_a_distribution(lm):
    for history in ["", "ఈ రో", "తారీ", "ఎవరో తెలియని"]:
        # every character it has seen (EOS among them), plus one share for any it has not (ౠ)
        total = sum(math.exp(lm.logprob(history, ch)) for ch in lm.vocab + ["ౠ"])
        assert total == pytest.approx(1.0, abs=1e-6), history


def test_the_lm_prefers_what_users_say(lm, tmp_path):
    assert lm.text_logprob("ఈ రోజు తారీఖు ఎంత") > lm.text_logprob("ఈ రాజు తారిఖు ఎంత") + 3
    lm.save(tmp_path / "lm.json", note="test")
    again = ear_lm.load(tmp_path / "lm.json")
    assert again.text_logprob("నీ పేరు ఏమిటి") == pytest.approx(lm.text_logprob("నీ పేరు ఏమిటి"))
    with pytest.raises(FileNotFoundError, match="ear_lm.py build"):
        ear_lm.load(tmp_path / "missing.json")


def ctc_log_probs(text, confusions=None, blank_between=1, seed=0):
    """A CTC output spelling `text`: each character a slot (p 0.97, or 0.55 against a confused
    one at 0.45), blanks between; every slot a little noise."""
    rng = np.random.default_rng(seed)
    V = ta.VOCAB_SIZE
    rows = []
    for ch in text:
        p = np.full(V, 1e-4)
        wrong = (confusions or {}).get(ch)
        if wrong:
            p[ta.CHAR_ID[wrong]], p[ta.CHAR_ID[ch]] = 0.55, 0.45  # greedy reads the wrong one
        else:
            p[ta.CHAR_ID[ch]] = 0.97
        rows.append(p)
        for _ in range(blank_between):
            q = np.full(V, 1e-4)
            q[ta.BLANK] = 0.99
            rows.append(q)
    lp = np.log(np.stack(rows) * rng.uniform(0.9, 1.1, (len(rows), V)))
    return lp - np.logaddexp.reduce(lp, axis=1, keepdims=True)


def greedy(lp):
    ids = lp.argmax(-1).tolist()
    return ta.decode_ids([i for k, i in enumerate(ids) if i != ta.BLANK and (k == 0 or i != ids[k - 1])])


def test_the_beam_search_reads_what_greedy_gets_wrong(lm):
    lp = ctc_log_probs("ఈ రోజు తారీఖు ఎంత", confusions={"ో": "ా", "ీ": "ి"})
    assert greedy(lp) == "ఈ రాజు తారిఖు ఎంత"
    decoder = ear_lm.BeamDecoder(lm, ta.ALPHABET, ta.BLANK)
    assert decoder.decode(lp) == "ఈ రోజు తారీఖు ఎంత"
    # without the LM's weight it reads what the ear says
    assert ear_lm.BeamDecoder(lm, ta.ALPHABET, ta.BLANK, alpha=0.0, beta=0.0).decode(lp) == greedy(lp)


def test_doubled_characters_need_a_blank(lm):
    lp = ctc_log_probs("అమ్మ", blank_between=0)  # మ ్ మ: no repeat back to back, all kept
    assert ear_lm.BeamDecoder(lm, ta.ALPHABET, ta.BLANK, alpha=0.0, beta=0.0).decode(lp) == "అమ్మ"
    lp = np.concatenate([ctc_log_probs("అ", blank_between=0)] * 2)  # అ held over two slots: one అ
    assert ear_lm.BeamDecoder(lm, ta.ALPHABET, ta.BLANK, alpha=0.0, beta=0.0).decode(lp) == "అ"


def test_streaming_the_beam_search_equals_decoding_whole(lm):
    lp = ctc_log_probs("ఈ రోజు ఏ వారం", confusions={"వ": "ప"}, seed=3)
    decoder = ear_lm.BeamDecoder(lm, ta.ALPHABET, ta.BLANK, beam=4)
    whole = decoder.decode(lp)
    rng = random.Random(0)
    for _ in range(3):
        beams, i = decoder.start(), 0
        while i < len(lp):
            n = rng.randint(1, 5)
            beams = decoder.advance(beams, lp[i:i + n])
            i += n
        assert decoder.finish(beams) == whole


def test_the_shipped_lm_is_counted_from_training_text_only():
    lm = ear_lm.load()
    import brain_data as bd
    from telugu_text import asr_text

    # held-out phrasings are not memorised: the LM scores them per character like any Telugu
    held = [asr_text(t["user_text"]) for t in bd.heldout_turns("heldout_val", 20)]
    per_char = [-lm.text_logprob(t) / (len(t) + 1) for t in held]
    assert 0.05 < float(np.median(per_char)) < 3.0


def test_forced_alignment_times_the_lms_reading(lm):
    lp = ctc_log_probs("ఈ రోజు తారీఖు ఎంత", confusions={"ో": "ా", "ీ": "ి"})
    slot = 0.02
    ids = lp.argmax(-1).tolist()
    assert ta.align_words(lp, greedy(lp), slot) == ta.words_from_ids(ids, slot)[1]  # greedy's own timing
    words = ta.align_words(lp, "ఈ రోజు తారీఖు ఎంత", slot)
    assert [w for w, _, _ in words] == ["ఈ", "రోజు", "తారీఖు", "ఎంత"]
    assert all(a < b for _, a, b in words) and all(w1[2] <= w2[1] for w1, w2 in zip(words, words[1:]))
    assert ta.align_words(lp[:5], "ఈ రోజు తారీఖు ఎంత", slot) is None  # more characters than slots


def test_the_transcribe_cli_reads_with_the_lm(tmp_path):
    import json
    import subprocess
    import sys

    import soundfile as sf

    import telugu_tts
    from pathlib import Path

    pcm, _ = telugu_tts.synthesize("ఈ రోజు తారీఖు ఎంత", telugu_tts.voices("test")[0])
    sf.write(tmp_path / "q.wav", pcm, 24000)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, str(root / "telugu_asr.py"), "transcribe", str(tmp_path / "q.wav"),
                        str(tmp_path / "bad.wav"), "--lm"], capture_output=True, text=True, timeout=120)
    good, bad = [json.loads(line) for line in r.stdout.splitlines()]
    assert r.returncode == 1 and "error" in bad and good["text"]
    assert [w[0] for w in good["words"]] == good["text"].split() and all(w[1] < w[2] for w in good["words"])
