"""Held-out evaluation of the S2S agent (issue 6): one command, a table per agent voice, a JSON.

    python s2s_eval.py --checkpoint checkpoints/s2s.safetensors [--codec C] [--dialogues data/dialogues]
                       [--split heldout_test] [--limit N] [--json runs/s2s_eval.json]

Each held-out dialogue (user voices and phrasings never trained on) is replayed as the user's side,
frame by frame through s2s_transformer.converse (the server's loop: streaming codec, generator,
ContextManager with barge-in), with the dialogue's agent voice. Per agent voice:

    answer_accuracy   turns whose agent text (from the request's start to the next request)
                      dialogue_domain.is_correct accepts; interrupted answers are not scored
    user_cer          the model's user transcript against the user's words (whole dialogue)
    voice_match       the speaker encoder's voice_bank.identify() of the agent's audio is the voice
                      asked for (a silent agent does not match)
    round_trip_cer    the agent's audio fed back as a user, transcribed by the model's own user-text
                      stream, against the agent's text
    barge_in_200ms    interruptions where the agent was speaking at the user's onset and fell
                      silent (for at least 200 ms) within 200 ms of it
    response_gap_ms   end of a request's last word to the agent's first audio after it (p50, p95),
                      and responded: the share of requests answered with any audio before the next
    talked_over       requests the agent, quiet when they began, spoke over before their end
                      (talked_over_pause: the same over the requests with a pause inside them)
    step_ms           the generator's step per frame on one thread (frame_ms: with the codec's
                      streaming decoder)

plus sentence_test_cer: the user transcript CER on the sentence corpus's test voices and sentences.

`--agent v2` scores the agent of voice_agent.py (ear, its LM, brain, mouth) on the same measures,
plus written_accuracy (the brain's answer was right, spoken whole or cut by the next request) and
user_read_cer (the requests as the brain read them). `--interactive` plays a ListeningUser, who
waits for this agent's answers, instead of the recorded user channel.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch

import dialogue_domain as domain
import s2s_batching as sb
import s2s_transformer as s2s
from audio_io import load_audio, read_manifest
from telugu_text import cer
from telugu_tokenizer import PAD_ID

ROOT = Path(__file__).resolve().parent
TARGETS = {"answer_accuracy": ">= 0.90", "voice_match": ">= 0.95", "round_trip_cer": "<= 0.10",
           "barge_in_200ms": ">= 0.95", "response_gap_ms_p50": "<= 300", "step_ms_p50": "< 40"}
BARGE_IN_MS = 200


# --- the user's transcript, greedy (also train_s2s.py's validation) ---------------------------------

@torch.no_grad()
def transcribe(model, user, voice, silence_codes, n_frames=None, pad_bias: float = 0.0) -> torch.Tensor:
    """Greedy streaming transcript of a batch while the agent stays silent (stage 1's setting):
    the temporal transformer stepped frame by frame with its KV cache, each step reading the user
    text it chose the step before. user: S2SModel.embed_user's input; -> ids [B, T]. pad_bias > 0
    lowers PAD's logit by that much (a young model's PAD wins most argmaxes)."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    B = user.shape[0]
    T = n_frames or (user.shape[-1] // model.frame_size if model.cfg.user_input == "mel" else user.shape[-1])
    codes = torch.as_tensor(silence_codes, device=dev)[:model.n_codebooks].long()[None, :, None].expand(B, -1, T)
    delayed = s2s._shift_right(model.apply_delay(codes), model.empty_code)
    agent_text = s2s._shift_right(torch.full((B, T), PAD_ID, device=dev), model.text_start)
    base = model.embed_user(user.to(dev), T) + model.voice_bias(voice, B, dev) + \
        model.agent_code_emb(delayed + model.agent_code_offsets[:, None]).sum(dim=1) + model.agent_text_emb(agent_text)
    caches = model.temporal.new_caches(B, model.cfg.context_frames, dev)
    prev = torch.full((B,), model.text_start, dtype=torch.long, device=dev)
    out = torch.empty(B, T, dtype=torch.long, device=dev)
    for t in range(T):
        cos, sin = s2s.rope(torch.tensor([t], device=dev), model.temporal.head_dim)
        x = base[:, t:t + 1] + model.user_text_emb(prev)[:, None]
        h = model.temporal.step(x, cos, sin, caches)
        logits = model.user_text_head(h)[:, 0]
        logits[:, PAD_ID] -= pad_bias
        prev = out[:, t] = logits.argmax(-1)
    model.train(was_training)
    return out


def validation_clips(manifest, n: int, sample_rate: int) -> list[dict]:
    """`n` clips spread over the manifest (every k-th row, so every val voice is in)."""
    rows = [r for r in read_manifest(manifest) if r.get("words")]
    step = max(1, len(rows) // max(1, n))
    return [dict(pcm=load_audio(r["audio"], sample_rate), ref=words_text(r["words"]), words=r["words"],
                 speaker=r["speaker"]) for r in rows[::step][:n]]


def validate_transcription(model, clips, tokenizer, codec, silence_codes, voice, tail_s=1.0, batch=16,
                           lag_frames=2, pad_bias=0.0) -> dict:
    """User-transcript quality on held-out voices, with the agent silent:
        cer        greedy streaming decode of each clip + tail silence (what the page would show)
        token_loss teacher-forced cross-entropy on the frames that carry a word's token, and
        token_acc  how often the argmax there is that token: smooth measures that move long before
                   a young model's greedy decode stops choosing PAD."""
    dev = next(model.parameters()).device
    fs, sr = model.frame_size, model.config.codec.sample_rate
    rate = sr / fs
    hyps, losses, hits, n_tokens = [], 0.0, 0, 0
    for i in range(0, len(clips), batch):
        group = clips[i:i + batch]
        T = max(sb.frames_for(len(c["pcm"]) + int(tail_s * sr), fs) for c in group)
        targets = [sb.align(tokenizer, c["words"], T, rate, lag_frames, "end") for c in group]
        T = max(n for _, n in targets)
        pcm = torch.zeros(len(group), 1, T * fs)
        text = torch.full((len(group), T), PAD_ID, dtype=torch.long)
        for b, (c, (ids, n)) in enumerate(zip(group, targets)):
            pcm[b, 0, :len(c["pcm"])] = torch.from_numpy(c["pcm"])
            text[b, :n] = torch.as_tensor(ids)
        user = sb.user_input(pcm.to(dev), model.cfg.user_input, codec, model.n_codebooks)
        v = None if voice is None else torch.as_tensor(voice)[None].expand(len(group), -1).to(dev)
        ids = transcribe(model, user, v, silence_codes, T, pad_bias)
        hyps += [tokenizer.decode(row.tolist()) for row in ids.cpu()]
        with torch.no_grad():
            codes = torch.as_tensor(silence_codes, device=dev)[None, :, None].expand(len(group), -1, T).long()
            batch_tf = dict(user=user, agent_codes=codes, agent_text=torch.full_like(text, PAD_ID).to(dev),
                            user_text=text.to(dev), voice=v)
            logits = model(batch_tf, depth=False)["user_text"].float()
            word = text.to(dev) != PAD_ID
            losses += torch.nn.functional.cross_entropy(logits[word], text.to(dev)[word], reduction="sum").item()
            hits += (logits[word].argmax(-1) == text.to(dev)[word]).sum().item()
            n_tokens += int(word.sum())
    refs = [c["ref"] for c in clips]
    return {"cer": cer(refs, hyps), "token_loss": losses / max(1, n_tokens), "token_acc": hits / max(1, n_tokens),
            "examples": list(zip(refs[:3], hyps[:3]))}


def silence_codes_of(codec) -> np.ndarray:
    """The codec's answer to steady silence, all codebooks (as the streaming generator forces it)."""
    return s2s.steady_silence_codes(codec).cpu().numpy()


def words_text(words) -> str:
    return " ".join(w["word"] for w in words)


def _frames(seconds: float, frame_s: float) -> int:
    return int(math.floor(seconds / frame_s + 1e-6))


def run_dialogue(model, codec, bank, tokenizer, d: dict, context_cfg, temperature=None, top_k=None, seed=0,
                 encoder=None, text_temperature=None, text_top_k=None, oracle_transcript=False) -> dict:
    """Replay one dialogue's user side and score what the agent did (see the module docstring).
    oracle_transcript: the model reads the true user words (aligned as in training) instead of its
    own transcript, so answer accuracy then measures answering alone."""
    sr = codec.sample_rate
    user = sb.read_channel(d["audio"], 0, sample_rate=sr)
    voice = bank.embedding(d["agent_voice"]) if bank is not None and d["agent_voice"] in bank.names() else None
    oracle = None
    if oracle_transcript:
        n = sb.frames_for(len(user), model.frame_size)
        oracle, _ = sb.align(tokenizer, d["user_words"], n, sr / model.frame_size, sb.StageSettings.user_lag_frames, "end")
    run = s2s.converse(model, codec, user, voice, context_cfg, temperature, top_k, seed, tokenizer=tokenizer,
                       text_temperature=text_temperature, text_top_k=text_top_k, user_text_ids=oracle,
                       now=d["meta"].get("now"))  # the moment its time and date answers were written for
    return score_dialogue(run, d, encoder, bank, model.frame_size, sr)


def score_dialogue(run: dict, d: dict, encoder, bank, frame_size: int, sr: int) -> dict:
    """What the agent did in one replayed dialogue (a converse() report), turn by turn."""
    frame_s = run["frame_ms"] / 1000
    active = [db > s2s.AGENT_ACTIVE_DB for db in run["agent_db"]]
    meta = d["meta"]
    requests = sorted((u for u in meta["utterances"] if u["side"] == "user" and u["kind"] == "request"),
                      key=lambda u: u["start"])
    turns = []
    for i, u in enumerate(requests):
        nxt = requests[i + 1]["start"] if i + 1 < len(requests) else len(active) * frame_s
        last = i + 1 == len(requests)
        said = "".join(p["piece"] for p in run["pieces"]["agent"] if u["start"] < p["t"] and (last or p["t"] <= nxt)).strip()
        ref_turn = meta["turns"][u["turn"]]
        onset = next((f for f in range(_frames(u["end"], frame_s) + 1, min(len(active), _frames(nxt, frame_s)))
                      if active[f]), None)
        # Talking over the user: the agent was quiet when the request began and spoke before its end
        # (an early endpoint in a pause, or speech of its own); None where the request interrupts it.
        f0, f1 = _frames(u["start"], frame_s), min(len(active), _frames(u["end"], frame_s))
        over = None if any(active[max(0, f0 - 3):f0 + 1]) else any(active[f0 + 1:f1])
        turn = {}
        if "answers" in run:  # the v2 agent: the answer the brain wrote for this request, spoken whole or not
            written = " ".join(a["text"] for a in run["answers"] if u["start"] < a["t"] and (last or a["t"] <= nxt))
            turn = {"written": written,
                    "written_correct": bool(written) and bool(domain.is_correct(u["intent"], u["slots"], written))}
        turns.append({**turn, "intent": u["intent"], "said": said, "expected": ref_turn["agent_text"],
                      "scored": not ref_turn["interrupted"],
                      "correct": bool(domain.is_correct(u["intent"], u["slots"], said)) if said else False,
                      "gap_ms": None if onset is None else round(max(0.0, onset * frame_s - u["end"]) * 1000),
                      "talked_over": over, "hesitation": bool(u.get("hesitation"))})
    barge = []
    for it in meta.get("interruptions", []):
        f0 = _frames(it["onset"], frame_s)
        if not any(active[max(0, f0 - 3):f0]):
            continue  # the agent was not speaking when the user came in: nothing to yield
        window = _frames(BARGE_IN_MS / 1000, frame_s)
        ok = any(not any(active[f:f + window]) for f in range(f0, min(len(active), f0 + window + 1)))
        barge.append(bool(ok))
    out = {"id": meta["id"], "agent_voice": d["agent_voice"], "turns": turns, "barge_in": barge,
           "user_ref": words_text(d["user_words"]), "user_hyp": run["user_text"], "agent_text": run["agent_text"],
           "step_ms": run["step_ms"], "frame_ms": run["frame_total_ms"]}
    if encoder is not None:
        out.update(voice_check(run, active, encoder, bank, d["agent_voice"], sr, frame_size))
    out["agent_pcm"] = run["agent_pcm"]
    return out


@torch.no_grad()
def text_answers(model, codec, bank, tokenizer, n: int, split: str = "heldout_val", seed: int = 0,
                 text_temperature: float | None = None) -> dict:
    """Answering alone, without audio: n dialogue plans of `split` (held-out phrasings and slot
    values; dialogue_corpus.plan_dialogue), timed as s2s_batching.TextDialogues times its items. The
    model reads the true user words with its user audio silent and its agent codes held at
    silence (as those items were trained), and its agent text runs free, sampled as in a conversation
    (the model's text temperature unless given; greedy decoding mostly picks PAD). A turn is right
    when is_correct accepts the agent text between the request's end and the next request."""
    import dialogue_corpus
    texts = sb.TextDialogues(tokenizer, codec.sample_rate, model.frame_size, sb.StageSettings(), seed, bank)
    silent = codec.latent(torch.zeros(1, 1, 50 * model.frame_size))[0, :, -1]  # the settled latent of silence
    silence_codes = s2s.steady_silence_codes(codec, model.n_codebooks)
    turns = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        spec = dialogue_corpus.plan_dialogue(split, i, seed=seed, augment=False)
        line = texts.timeline(spec, rng)
        gen = model.streaming(voice=texts.voices[line["voice"]], seed=seed + i, codec=codec, tokenizer=tokenizer,
                              text_temperature=text_temperature, now=spec["now"])
        pieces = []
        for t, user_id in enumerate(line["user_text"]):
            out = gen.step(silent, agent_codes=silence_codes, user_text=int(user_id))
            pieces.append(out.agent_text_piece)
        for k, turn in enumerate(line["turns"]):
            stop = line["turns"][k + 1]["start"] if k + 1 < len(line["turns"]) else len(pieces)
            said = "".join(pieces[turn["end"]:stop]).strip()
            turns.append({"intent": turn["intent"], "said": said, "expected": turn["agent_text"],
                          "correct": bool(said) and bool(domain.is_correct(turn["intent"], turn["slots"], said))})
    per_intent = defaultdict(lambda: [0, 0])
    for t in turns:
        per_intent[t["intent"]][0] += 1
        per_intent[t["intent"]][1] += int(t["correct"])
    return {"text_answer_accuracy": round(float(np.mean([t["correct"] for t in turns])), 4) if turns else 0.0,
            "text_turns": len(turns), "text_per_intent": {k: {"turns": v[0], "correct": v[1]} for k, v in sorted(per_intent.items())},
            "text_examples": turns[:8]}


@torch.no_grad()
def text_forced(model, codec, bank, tokenizer, n: int, split: str = "heldout_val", seed: int = 0,
                batch: int = 16) -> dict:
    """Answering alone, teacher-forced: n dialogue plans of `split` timed as text_answers times
    them and read as training reads its text items (TextDialogues.line_item, batch_user_input),
    the agent's true answer tokens read back, each answer token predicted from the frames
    before it. Only which word, not when: PAD is masked out of the agent's text logits at the
    answer's token frames. Deterministic and one batched forward, so it moves with training where
    the sampled text_answers (a right turn needs every token) stays at the noise floor; a turn
    counts as forced-right when every one of its answer tokens is the likeliest word."""
    import dialogue_corpus
    texts = sb.TextDialogues(tokenizer, codec.sample_rate, model.frame_size, sb.StageSettings(), seed, bank)
    silence = silence_codes_of(codec)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    first, tokens, turns, nll, ceilings = [], [], [], [], []
    for b0 in range(0, n, batch):
        lines, items = [], []
        for i in range(b0, min(n, b0 + batch)):
            line = texts.timeline(dialogue_corpus.plan_dialogue(split, i, seed=seed, augment=False),
                                  np.random.default_rng([seed, i]))
            lines.append(line)
            items.append(texts.line_item(line))
        b = {k: v.to(device) for k, v in sb.collate(items, silence, model.voice_in.in_features).items()}
        b["user"] = sb.batch_user_input(b, model.cfg.user_input, codec, model.n_codebooks)  # as training reads it
        logits = model(b, depth=False)["agent_text"].float()
        logits[..., tokenizer.pad_id] = float("-inf")
        logp = torch.log_softmax(logits, dim=-1).cpu()
        for row, line in enumerate(lines):
            agent = line["agent_text"]
            for k, turn in enumerate(line["turns"]):
                stop = line["turns"][k + 1]["start"] if k + 1 < len(line["turns"]) else len(agent)
                frames = [f for f in range(max(0, turn["end"] - 1), stop) if agent[f] != tokenizer.pad_id]
                if not frames:
                    continue
                target = torch.as_tensor(agent[frames])
                right = logp[row, frames].argmax(-1) == target
                first.append(bool(right[0]))
                turns.append(bool(right.all()))
                tokens.extend(right.tolist())
                nll.append(float(-logp[row, frames, target].mean()))
                ceilings.append(wording_ceilings(turn["intent"], turn["slots"], tokenizer))
    model.train(was_training)
    mean = lambda xs: round(float(np.mean(xs)), 4) if xs else 0.0
    return {"forced_turns": len(turns), "forced_first_token_acc": mean(first), "forced_token_acc": mean(tokens),
            "forced_turn_acc": mean(turns), "forced_content_nll": mean(nll),
            "forced_first_token_ceiling": mean([c[0] for c in ceilings]),
            "forced_turn_ceiling": mean([c[1] for c in ceilings])}


def wording_ceilings(intent: str, slots: dict, tokenizer) -> tuple[float, float]:
    """The best a model can score on one turn in text_forced: the reply is drawn uniformly among
    the intent's wordings (dialogue_domain.sample_turn), and teacher forcing reads back the one
    drawn, so a model that always gives the likeliest wording is right with probability
    max P(wording), and on the first token max P(first token). 60 of the 73 intents have 2-3
    wordings: the whole-answer ceiling is about 0.54, the first token's about 0.78."""
    # tokenised word by word, as TextDialogues.timed_words and align_words lay an answer out
    seqs = [tuple(i for w in (raw.strip(sb._PUNCT) for raw in text.split()) if w for i in tokenizer.encode(w))
            for text in domain.answers(intent, slots)]
    if not seqs:
        return 1.0, 1.0
    top = lambda counts: max(counts.values()) / len(seqs)
    return top(Counter(q[:1] for q in seqs)), top(Counter(seqs))


def voice_check(run, active, encoder, bank, voice, sr, fs) -> dict:
    speech = np.concatenate([run["agent_pcm"][f * fs:(f + 1) * fs] for f, on in enumerate(active) if on] or
                            [np.zeros(0, np.float32)])
    if len(speech) < sr // 2:
        return {"voice_identified": None, "voice_match": False}
    name, score = bank.identify(encoder.embed(speech, sr))
    return {"voice_identified": name, "voice_similarity": round(score, 3), "voice_match": name == voice}


def round_trip(model, codec, tokenizer, results, silence_codes, bank, batch: int = 8) -> None:
    """The agent's audio, fed back as a user's, transcribed by the model; adds round_trip_hyp."""
    todo = [r for r in results if r["agent_text"]]
    fs = model.frame_size
    for i in range(0, len(todo), batch):
        group = todo[i:i + batch]
        T = max(len(r["agent_pcm"]) // fs for r in group) + 25  # a second more, for the lagging transcript
        pcm = torch.zeros(len(group), 1, T * fs)
        for b, r in enumerate(group):
            pcm[b, 0, :len(r["agent_pcm"])] = torch.from_numpy(r["agent_pcm"])
        user = sb.user_input(pcm, model.cfg.user_input, codec, model.n_codebooks)
        voice = None
        if bank is not None:
            voice = torch.stack([bank.embedding(r["agent_voice"]) if r["agent_voice"] in bank.names()
                                 else torch.zeros(model.voice_in.in_features) for r in group])
        ids = transcribe(model, user, voice, silence_codes, T)
        for r, row in zip(group, ids):
            r["round_trip_hyp"] = tokenizer.decode(row.tolist())


def summarise(results) -> dict:
    turns = [t for r in results for t in r["turns"] if t["scored"]]
    gaps = [t["gap_ms"] for r in results for t in r["turns"] if t["gap_ms"] is not None]
    all_turns = [t for r in results for t in r["turns"]]
    barge = [b for r in results for b in r["barge_in"]]
    rt = [r for r in results if "round_trip_hyp" in r]
    steps = [x for r in results for x in r["step_ms"]]
    frames = [x for r in results for x in r["frame_ms"]]
    voice = [r["voice_match"] for r in results if "voice_match" in r]
    over = [t["talked_over"] for t in all_turns if t.get("talked_over") is not None]
    # Requests with a pause inside (dialogue_corpus.HESITATION): did the agent wait it out?
    over_pause = [t["talked_over"] for t in all_turns if t.get("talked_over") is not None and t.get("hesitation")]
    pct = lambda xs, q: round(float(np.percentile(xs, q)), 1) if xs else None
    return {
        "dialogues": len(results), "turns_scored": len(turns),
        "answer_accuracy": round(float(np.mean([t["correct"] for t in turns])), 4) if turns else None,
        # the v2 agent: right answers as written, also where the replayed user's next request cut them
        **({"written_accuracy": round(float(np.mean([t["written_correct"] for t in turns])), 4)}
           if turns and "written" in turns[0] else {}),
        "user_cer": round(cer([r["user_ref"] for r in results], [r["user_hyp"] for r in results]), 4) if results else None,
        "voice_match": round(float(np.mean(voice)), 4) if voice else None,
        "round_trip_cer": round(cer([r["agent_text"] for r in rt], [r["round_trip_hyp"] for r in rt]), 4) if rt else None,
        "round_trip_n": len(rt),
        "barge_in_200ms": round(float(np.mean(barge)), 4) if barge else None, "barge_in_n": len(barge),
        "response_gap_ms_p50": pct(gaps, 50), "response_gap_ms_p95": pct(gaps, 95),
        "responded": round(len(gaps) / len(all_turns), 4) if all_turns else None,
        "talked_over": round(float(np.mean(over)), 4) if over else None,
        "talked_over_pause": round(float(np.mean(over_pause)), 4) if over_pause else None,
        "talked_over_pause_n": len(over_pause),
        "step_ms_p50": pct(steps, 50), "step_ms_p95": pct(steps, 95),
        "frame_ms_p50": pct(frames, 50), "frame_ms_p95": pct(frames, 95),
    }


def by_intent(results) -> dict:
    """Per intent: scored turns, answers right, and requests answered with any audio. Where the
    model fails (it cannot hear the slot, or it never starts talking) differs by intent."""
    rows = defaultdict(lambda: {"turns": 0, "correct": 0, "responded": 0})
    for t in (t for r in results for t in r["turns"] if t["scored"]):
        row = rows[t["intent"]]
        row["turns"] += 1
        row["correct"] += int(t["correct"])
        row["responded"] += int(t["gap_ms"] is not None)
    return dict(sorted(rows.items()))


COLUMNS = [("answer_accuracy", "answer acc"), ("user_cer", "user CER"), ("voice_match", "voice match"),
           ("round_trip_cer", "round-trip CER"), ("barge_in_200ms", "barge-in ≤200ms"),
           ("response_gap_ms_p50", "gap p50 ms"), ("response_gap_ms_p95", "gap p95 ms"),
           ("step_ms_p50", "step ms p50"), ("frame_ms_p50", "+codec ms p50")]


def table(report) -> str:
    fmt = lambda v: "—" if v is None else (f"{v:.3f}" if isinstance(v, float) and v < 10 else f"{v}")
    head = "| voice | dialogues | " + " | ".join(c for _, c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    rows = list(report["per_voice"].items()) + [("all", report["all"])]
    for name, m in rows:
        lines.append(f"| {name} | {m['dialogues']} | " + " | ".join(fmt(m[k]) for k, _ in COLUMNS) + " |")
    lines.append("| target | | " + " | ".join(TARGETS.get(k, "") for k, _ in COLUMNS) + " |")
    return "\n".join(lines)


def load_model(path):
    """An exported model (.safetensors + .json, s2s_transformer.load) or a training checkpoint (.pt,
    its Config inside; the shipped tokenizer)."""
    if path is None or Path(path).suffix != ".pt":
        return s2s.load(path)
    from config import from_dict
    from telugu_tokenizer import Tokenizer
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = s2s.S2SModel(from_dict(state["config"]))
    model.load_state_dict(state["model"])
    model.tokenizer = Tokenizer.load()
    model.step = state["step"]
    return model.eval()


def augment_clips(clips, sr: int, strength: float, seed: int = 0) -> list[dict]:
    """The clips through training's augmentation (augment.py: tempo, pitch, formant, reverb, noise,
    microphone, band limit, level, clipping), clip i with the generator [seed, i]: the same rooms
    and microphones for every model scored, none of them drawn in training."""
    import augment
    out = []
    for i, c in enumerate(clips):
        pcm, words, _ = augment.augment(c["pcm"], sr, np.random.default_rng([seed, i]), c["words"], strength)
        out.append({**c, "pcm": pcm, "words": words})
    return out


def transcript_report(model, codec, tokenizer, args, bank_path: Path) -> int:
    clips = validation_clips(args.sentences, args.limit or 10 ** 6, codec.sample_rate)
    if args.augment > 0:
        clips = augment_clips(clips, codec.sample_rate, args.augment, args.augment_seed)
    silence = silence_codes_of(codec)
    report = {"checkpoint": str(args.checkpoint), "step": getattr(model, "step", None),
              "user_input": model.cfg.user_input, "sentences": args.sentences, "clips": len(clips),
              "augment": args.augment}
    # Dialogue-trained models listen with a voice set (stage-2 validation uses the bank's first);
    # "" reads with the zero vector, as stage-1 models were trained.
    voice = None
    if args.listen_voice:
        import speaker_embeddings
        bank = speaker_embeddings.VoiceBank.load(bank_path)
        voice = bank.embedding(bank.names()[0] if args.listen_voice == "first" else args.listen_voice).numpy()
    report["listen_voice"] = args.listen_voice
    for bias in sorted({0.0, args.pad_bias}):
        m = validate_transcription(model, clips, tokenizer, codec, silence, voice, pad_bias=bias)
        report["cer" if bias == 0 else f"cer_pad_bias_{bias:g}"] = round(m["cer"], 4)
        report.update(token_loss=round(m["token_loss"], 4), token_acc=round(m["token_acc"], 4))
        report.setdefault("examples", []).extend(m["examples"][:2])
    print(json.dumps(report, ensure_ascii=False))
    if args.json:
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


class ListeningUser:
    """A replayed user who waits for the agent (`s2s_eval.py --agent v2 --interactive`): each
    utterance of the dialogue's user channel (with its room) is played where the corpus puts it
    relative to the agent, measured from what this agent does. A request after an answer comes the
    corpus's gap after this agent stops talking; a backchannel or an interruption during an answer
    comes at the corpus's offset into this agent's answer. So an answer is not cut because the
    corpus's agent spoke faster, and an interruption still lands inside the answer. A user who
    hears nothing for `wait_s` after a request goes on. Between utterances it plays silence (a
    looped noise floor sounded like speech to the ear), each utterance faded in and out. `meta()` is the dialogue's meta with the user's utterances moved to where
    they were played, for score_dialogue."""
    QUIET_FRAMES = 12  # 480 ms of the agent neither audible nor in its speaking state ends its answer

    def __init__(self, d: dict, sr: int, frame_size: int, wait_s: float = 5.0, pad_s: float = 0.15,
                 tail_s: float = 4.0):
        import copy

        self.d, self.sr, self.fs, self.frame_s = d, sr, frame_size, frame_size / sr
        self.wait, self.tail, self.pad = round(wait_s / self.frame_s), round(tail_s / self.frame_s), pad_s
        user = sb.read_channel(d["audio"], 0, sample_rate=sr)
        utts = sorted(d["meta"]["utterances"], key=lambda u: u["start"])
        answers = [u for u in utts if u["side"] == "agent"]
        self.users = [u for u in utts if u["side"] == "user"]
        self.items, prev_end = [], 0.0
        interrupting = {it["by_turn"] for it in d["meta"].get("interruptions", [])}
        ramp = np.linspace(0.0, 1.0, int(0.01 * sr), dtype=np.float32)
        for i, u in enumerate(self.users):
            a0, a1 = max(0.0, u["start"] - pad_s), min(len(user) / sr, u["end"] + pad_s)
            before = [a for a in answers if a["start"] < u["start"] and a["start"] >= prev_end - 1e-6]
            a = before[-1] if before else None
            if i == 0:
                rule, value = "start", u["start"]
            elif a is None:
                rule, value = "gap", u["start"] - prev_end
            elif u["start"] < a["end"] and (u["kind"] != "request" or u.get("turn") in interrupting):
                rule, value = "during", u["start"] - a["start"]  # a backchannel or an interruption
            else:  # a request after the answer (one that overlaps its last syllable still waits for it)
                rule, value = "after", max(0.0, u["start"] - a["end"])
            clip = user[int(a0 * sr):int(a1 * sr)].astype(np.float32)
            if len(clip) > 2 * len(ramp):
                clip[:len(ramp)] *= ramp
                clip[-len(ramp):] *= ramp[::-1]
            self.items.append({"clip": clip, "lead": u["start"] - a0, "rule": rule, "value": value,
                               "request": u["kind"] == "request"})
            prev_end = max(prev_end, u["end"]) if u["kind"] == "request" else prev_end
        self.silence = np.zeros(frame_size, np.float32)
        self.meta_out = copy.deepcopy(d["meta"])
        self.next, self.cur, self.pos = 0, None, 0
        self.req_end = self.onset = self.end = None
        self.quiet, self.last_end, self.limit = 0, 0, round(4 * d["meta"]["duration"] / self.frame_s) + 500

    def _skip(self, t: int) -> bool:
        """A backchannel is said to an answer: none came within wait_s of the request."""
        it = self.items[self.next]
        return (not it["request"] and it["rule"] == "during" and self.onset is None and self.req_end is not None
                and t - self.req_end >= self.wait)

    def _due(self, t: int) -> bool:
        it = self.items[self.next]
        f = lambda s: round(s / self.frame_s)  # noqa: E731
        lead = f(it["lead"])
        if it["rule"] == "start":
            return t >= f(it["value"]) - lead
        if it["rule"] == "gap":
            return t >= self.last_end + f(it["value"]) - lead
        waited = self.req_end is not None and t - self.req_end >= self.wait
        if it["rule"] == "during":
            return (self.onset is not None and t >= self.onset + f(it["value"]) - lead) or (self.onset is None and waited)
        if self.end is not None:
            return t >= self.end + f(it["value"]) - lead
        return (self.onset is None and waited) or (self.onset is not None and t - self.onset > 3 * self.wait)

    def __call__(self, t: int, frame):
        fs = self.fs
        if frame is not None:  # what the agent did on the previous frame
            # audible, or in the middle of an answer (a backchannel's barge-in mutes it a moment)
            active = s2s.frame_db(frame.pcm) > s2s.AGENT_ACTIVE_DB or frame.state in ("speaking", "interrupted")
            if self.req_end is not None and self.onset is None and active:
                self.onset = t - 1
            if self.onset is not None and self.end is None:
                self.quiet = 0 if active else self.quiet + 1
                if self.quiet >= self.QUIET_FRAMES:
                    self.end = t - self.QUIET_FRAMES
        while self.cur is None and self.next < len(self.items) and self._skip(t):
            self.meta_out["utterances"].remove(next(v for v in self.meta_out["utterances"]
                                                    if v == self.users[self.next]))
            self.next += 1  # no answer to say "ఊ" to
        if self.cur is None and self.next < len(self.items) and self._due(t):
            self.cur, self.pos = self.items[self.next], 0
            u = self.users[self.next]
            start = t * self.frame_s + self.cur["lead"]
            moved = next(v for v in self.meta_out["utterances"] if v["side"] == "user" and v["start"] == u["start"]
                         and v["end"] == u["end"])
            shift = start - u["start"]
            moved["start"], moved["end"] = round(u["start"] + shift, 3), round(u["end"] + shift, 3)
            for w in moved.get("words", []):
                w["start"], w["end"] = round(w["start"] + shift, 3), round(w["end"] + shift, 3)
            for it in self.meta_out.get("interruptions", []):
                if u["kind"] == "request" and it.get("by_turn") == u.get("turn") and "moved" not in it:
                    it["onset"], it["moved"] = round(start, 3), True
            self.next += 1
        if self.cur is not None:
            out = self.cur["clip"][self.pos * fs:(self.pos + 1) * fs]
            self.pos += 1
            if (self.pos * fs) >= len(self.cur["clip"]):
                if self.cur["request"]:
                    self.req_end, self.onset, self.end, self.quiet = t, None, None, 0
                self.cur, self.last_end = None, t
            return np.pad(out, (0, fs - len(out))).astype(np.float32)
        if self.next >= len(self.items):  # all said: listen to the end of the answer
            answered = self.end is not None or (self.onset is None and self.req_end is not None
                                                and t - self.req_end >= self.wait)
            if (answered and t - self.last_end >= self.tail) or t >= self.limit:
                return None
        return self.silence

    def meta(self) -> dict:
        return self.meta_out


def run_v2(args) -> int:
    """The v2 agent (voice_agent.py: ear, brain, mouth) on the same dialogues and measures; the
    round trip is read by the ear."""
    import speaker_embeddings
    import voice_agent

    agent = voice_agent.load(args.ear, args.brain, args.mouth, lm=args.ear_lm)
    encoder = speaker_embeddings.load(args.speaker_path) if args.speaker_path or \
        speaker_embeddings.DEFAULT_CHECKPOINT.exists() else None
    bank = speaker_embeddings.VoiceBank.load(args.voice_bank)
    dialogues = sb.read_dialogues(args.dialogues, args.split, args.limit or None)
    if not dialogues:
        raise SystemExit(f"no dialogues in {args.dialogues}/dialogues_{args.split}.jsonl (dialogue_corpus.py)")
    sr, results = agent.codec.sample_rate, []
    for i, d in enumerate(dialogues):
        if args.interactive:  # the user waits for this agent's answers
            listener = ListeningUser(d, sr, agent.frame_size)
            run = voice_agent.converse(agent, None, d["agent_voice"], d["meta"].get("now"), user=listener)
            d = {**d, "meta": listener.meta()}
        else:
            user = sb.read_channel(d["audio"], 0, sample_rate=sr)
            run = voice_agent.converse(agent, user, d["agent_voice"], d["meta"].get("now"))
        r = score_dialogue(run, d, encoder, bank, agent.frame_size, sr)
        if r["agent_text"]:
            r["round_trip_hyp"] = agent.ear.transcribe(r["agent_pcm"])[0]
        r["user_read"] = " ".join(q["text"] for q in run["requests"])  # what the brain answered
        results.append(r)
        print(f"\r{i + 1}/{len(dialogues)} dialogues", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    by_voice = defaultdict(list)
    for r in results:
        by_voice[r["agent_voice"]].append(r)
    report = {"agent": "v2", "ear": str(args.ear or "checkpoints/asr.safetensors"),
              "brain": str(args.brain or "checkpoints/brain.safetensors"),
              "mouth": str(args.mouth or "checkpoints/mouth.safetensors"), "dialogues": args.dialogues,
              "split": args.split, "threads": args.threads, "interactive": args.interactive,
              "context": {k: getattr(agent.cfg, k) for k in ("ear_vad_threshold", "endpoint_quiet_frames",
                                                              "end_of_turn_prob", "max_wait_frames", "barge_in_frames")},
              "ear_lm": None if agent.decoder is None else str(args.ear_lm or "checkpoints/ear_lm.json"),
              # the requests as the brain read them (through the LM) against the whole user side
              # (backchannels included, which are never read as requests)
              "user_read_cer": round(cer([r["user_ref"] for r in results], [r["user_read"] for r in results]), 4),
              "per_voice": {v: summarise(rs) for v, rs in sorted(by_voice.items())}, "all": summarise(results),
              "per_intent": by_intent(results), "targets": TARGETS}
    report["examples"] = [{"id": r["id"], "voice": r["agent_voice"], "user_ref": r["user_ref"], "user_hyp": r["user_hyp"],
                           "user_read": r["user_read"],
                           "turns": [{k: t[k] for k in ("intent", "said", "written", "expected", "correct", "written_correct",
                                                        "gap_ms", "talked_over", "hesitation")} for t in r["turns"]]}
                          for r in results[:5]]
    print(table(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agent", choices=["s2s", "v2"], default="s2s",
                   help="s2s: the end-to-end S2S model (--checkpoint); v2: ear + brain + mouth (voice_agent.py)")
    p.add_argument("--ear", help="with --agent v2: the ear (default checkpoints/asr.safetensors)")
    p.add_argument("--brain", help="with --agent v2: the brain (default checkpoints/brain.safetensors)")
    p.add_argument("--mouth", help="with --agent v2: the mouth (default checkpoints/mouth.safetensors)")
    p.add_argument("--ear_lm", help="with --agent v2: the ear's language model (default checkpoints/ear_lm.json; "
                                    "none: the brain reads the greedy transcript)")
    p.add_argument("--checkpoint", help="S2S .safetensors (default: the shipped model)")
    p.add_argument("--codec", help="codec .safetensors (default: the shipped codec)")
    p.add_argument("--speaker_path", help="speaker encoder .safetensors (default: the shipped one)")
    p.add_argument("--voice_bank", help="voice bank JSON (default: beside the speaker encoder)")
    p.add_argument("--dialogues", default=str(ROOT / "data" / "dialogues"), help="dialogue_corpus.py output")
    p.add_argument("--interactive", action="store_true",
                   help="with --agent v2: the user waits for the agent (ListeningUser) instead of the corpus's timing")
    p.add_argument("--with_pauses", action="store_true", help="only the dialogues with a pause inside a request "
                   "(dialogue_corpus.HESITATION): more turns for talked_over_pause")
    p.add_argument("--split", default="heldout_test")
    p.add_argument("--sentences", default=str(ROOT / "data" / "synthetic" / "test.jsonl"),
                   help="sentence manifest for sentence_test_cer ('' to skip)")
    p.add_argument("--limit", type=int, default=0, help="first N dialogues only (0: all)")
    p.add_argument("--temperature", type=float, help="agent sampling (default: the model's config)")
    p.add_argument("--top_k", type=int)
    p.add_argument("--text_temperature", type=float, help="agent text sampling (default: --temperature if given, "
                                                           "else the model's config)")
    p.add_argument("--text_top_k", type=int)
    p.add_argument("--text_word_temperature", type=float,
                   help="draw PAD-or-word, then the word at this temperature (0: likeliest; <0: one draw; "
                        "default: the model's config, config.S2SConfig)")
    p.add_argument("--respond_after", type=int,
                   help="context.respond_after_frames: endpointing, frames of waiting before the agent's next "
                        "text token must be a word (-1: off; default: config.ContextConfig)")
    p.add_argument("--endpoint_word_prob", type=float, help="context.endpoint_word_prob: the early endpoint's "
                   "threshold on the model's P(word) (0: off)")
    p.add_argument("--endpoint_quiet", type=int, help="context.endpoint_quiet_frames: the early endpoint's silence")
    p.add_argument("--context_frames", type=int, help="the temporal transformer's attention window while "
                   "streaming (s2s.context_frames; default: the model's config)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the report here")
    p.add_argument("--text_dialogues", type=int, default=0, metavar="N",
                   help="also score answering alone on N held-out text dialogues (no audio; text_answers)")
    p.add_argument("--oracle_transcript", action="store_true",
                   help="the model reads the true user words instead of its own transcript (answering alone)")
    p.add_argument("--transcript_only", action="store_true",
                   help="only the user transcript on --sentences (CER greedy and with --pad_bias, token "
                        "loss and accuracy): the user-input comparison (docs/s2s_input_choice.md)")
    p.add_argument("--listen_voice", default="first", help="with --transcript_only: the agent voice set while "
                   "listening ('first': the bank's first, as stage-2 validation; '': none, as stage 1)")
    p.add_argument("--augment", type=float, default=0.0, help="with --transcript_only: pass each clip through "
                   "training's augmentation at this strength first (seeded per clip: unseen rooms and microphones)")
    p.add_argument("--augment_seed", type=int, default=20261126)
    p.add_argument("--pad_bias", type=float, default=2.0, help="with --transcript_only: also decode with PAD's "
                                                                "logit lowered by this much")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.agent == "v2":
        return run_v2(args)

    import speaker_embeddings
    import telugu_codec_fixed
    model = load_model(args.checkpoint)
    if args.text_word_temperature is not None:
        model.cfg.text_word_temperature = args.text_word_temperature
    if args.respond_after is not None:
        model.config.context.respond_after_frames = args.respond_after
    if args.context_frames is not None:
        model.cfg.context_frames = args.context_frames
    if args.endpoint_word_prob is not None:
        model.config.context.endpoint_word_prob = args.endpoint_word_prob
    if args.endpoint_quiet is not None:
        model.config.context.endpoint_quiet_frames = args.endpoint_quiet
    codec = telugu_codec_fixed.load(args.codec)
    if args.checkpoint is None or Path(args.checkpoint).suffix != ".pt":
        s2s.warn_codec_mismatch(args.checkpoint or s2s.SHIPPED, args.codec or telugu_codec_fixed.SHIPPED)
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise SystemExit("no tokenizer beside the checkpoint (telugu_spm.model)")
    spk_path = Path(args.speaker_path) if args.speaker_path else speaker_embeddings.DEFAULT_CHECKPOINT
    bank_path = Path(args.voice_bank) if args.voice_bank else spk_path.parent / "voice_bank.json"
    if args.transcript_only:
        return transcript_report(model, codec, tokenizer, args, bank_path)
    encoder = speaker_embeddings.load(spk_path) if spk_path.exists() else None
    bank = speaker_embeddings.VoiceBank.load(bank_path) if bank_path.exists() else None
    if encoder is None or bank is None:
        print(f"warning: no speaker encoder ({spk_path}) or voice bank ({bank_path}): no voice conditioning "
              "or voice match", file=sys.stderr)
        encoder = None if bank is None else encoder

    dialogues = sb.read_dialogues(args.dialogues, args.split, None if args.with_pauses else args.limit or None)
    if args.with_pauses:  # turn-taking probe: only dialogues with a pause inside a request
        dialogues = [d for d in dialogues if any(u.get("hesitation") for u in d["meta"]["utterances"])]
        dialogues = dialogues[:args.limit] if args.limit else dialogues
        if not dialogues:
            raise SystemExit(f"no dialogue in {args.dialogues}/dialogues_{args.split}.jsonl has a pause inside a "
                             "request (dialogue_corpus.py format 3 and later)")
    if not dialogues:
        raise SystemExit(f"no dialogues in {args.dialogues}/dialogues_{args.split}.jsonl (dialogue_corpus.py)")
    results = []
    for i, d in enumerate(dialogues):
        results.append(run_dialogue(model, codec, bank, tokenizer, d, model.config.context, args.temperature,
                                    args.top_k, args.seed + i, encoder, args.text_temperature, args.text_top_k,
                                    args.oracle_transcript))
        print(f"\r{i + 1}/{len(dialogues)} dialogues", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    silence = silence_codes_of(codec)
    round_trip(model, codec, tokenizer, results, silence, bank)
    by_voice = defaultdict(list)
    for r in results:
        by_voice[r["agent_voice"]].append(r)
    report = {"checkpoint": str(args.checkpoint or s2s.SHIPPED), "codec": str(args.codec or telugu_codec_fixed.SHIPPED),
              "dialogues": args.dialogues, "split": args.split, "with_pauses": args.with_pauses, "threads": args.threads,
              "oracle_transcript": args.oracle_transcript,
              "sampling": {**{k: getattr(args, k) for k in ("temperature", "top_k", "text_temperature", "text_top_k", "seed")},
                           "text_word_temperature": model.cfg.text_word_temperature,
                           "respond_after_frames": model.config.context.respond_after_frames,
                           "endpoint_word_prob": model.config.context.endpoint_word_prob,
                           "endpoint_quiet_frames": model.config.context.endpoint_quiet_frames},
              "context_frames": model.cfg.context_frames,
              "per_voice": {v: summarise(rs) for v, rs in sorted(by_voice.items())}, "all": summarise(results),
              "per_intent": by_intent(results), "targets": TARGETS}
    if args.sentences and Path(args.sentences).exists():
        clips = validation_clips(args.sentences, 10 ** 6, codec.sample_rate)
        if args.limit:
            clips = clips[::max(1, len(clips) // (4 * args.limit))][:4 * args.limit]
        voice = bank.embedding(bank.names()[0]) if bank is not None else None
        report["sentence_test_cer"] = round(validate_transcription(model, clips, tokenizer, codec, silence, voice)["cer"], 4)
        report["sentence_test_clips"] = len(clips)
    if args.text_dialogues:
        report.update(text_answers(model, codec, bank, tokenizer, args.text_dialogues, args.split, args.seed,
                                   args.text_temperature if args.text_temperature is not None else args.temperature))
        report.update(text_forced(model, codec, bank, tokenizer, 4 * args.text_dialogues, args.split, args.seed))
    report["examples"] = [{"id": r["id"], "voice": r["agent_voice"], "user_ref": r["user_ref"], "user_hyp": r["user_hyp"],
                           "turns": [{k: t[k] for k in ("intent", "said", "expected", "correct", "gap_ms", "talked_over", "hesitation")} for t in r["turns"]]}
                          for r in results[:5]]
    print(table(report))
    if "text_answer_accuracy" in report:
        print(f"text_answer_accuracy (answering alone, {report['text_turns']} turns of {args.text_dialogues} held-out "
              f"text dialogues): {report['text_answer_accuracy']:.3f}")
        print(f"teacher-forced, {report['forced_turns']} turns: first answer token {report['forced_first_token_acc']:.3f}, "
              f"answer tokens {report['forced_token_acc']:.3f}, whole answers {report['forced_turn_acc']:.3f}, "
              f"content NLL {report['forced_content_nll']:.3f}")
    if "sentence_test_cer" in report:
        print(f"sentence_test_cer (test voices x unseen sentences, {report['sentence_test_clips']} clips): "
              f"{report['sentence_test_cer']:.3f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
