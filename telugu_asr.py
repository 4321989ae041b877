"""The ear: a small streaming CTC recogniser for Telugu, trained on its own and then frozen.

    pcm 24 kHz ─▶ causal log-mel (25 ms windows ending on each 10 ms hop, 80 bands)
       ─▶ 4 hops stacked per 40 ms frame (the codec's 25 Hz) ─▶ frame MLP
       ─▶ causal transformer (RoPE, sliding window of `context_frames`, KV cache while streaming)
       ─▶ CTC over Telugu characters, `ctc_per_frame` slots per frame (two: 50 Hz of output room
          for fast speech at no extra transformer cost)
       ─▶ speech probability per frame (trained from the word timings), and the frame features

Nothing looks ahead: the network is causal, and CTC is free to learn how late to emit (it settles
one or two frames behind the sound, which is the look-ahead the contract allows, paid in time
instead of in architecture). So streaming equals offline by construction, chunk by chunk.

    ear = load()                                  # shipped checkpoint, eval mode
    state = ear.init_state(batch)
    pieces, features, speech_prob, state = ear.step(pcm_frames, state)   # [B, n * frame_size]

CLI: `python telugu_asr.py transcribe IN.wav [IN2.wav ...]` prints one JSON line per file.
"""
from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import ear_lm
from checkpoint_io import load_safetensors
from config import AsrConfig, Config, ContextConfig, config_json_path, from_dict
from telugu_text import asr_text, edit_distance

SHIPPED = Path(__file__).resolve().parent / "checkpoints" / "asr.safetensors"

# --- the alphabet -----------------------------------------------------------------------------------
# Every assigned code point of the Telugu block, plus the word space: a fixed alphabet, so a checkpoint
# never depends on which sentences happened to be in a corpus. Id 0 is the CTC blank.
BLANK = 0
SPACE = " "
ALPHABET = [SPACE] + [ch for ch in map(chr, range(0x0C00, 0x0C80)) if unicodedata.category(ch) != "Cn"]
CHAR_ID = {ch: i + 1 for i, ch in enumerate(ALPHABET)}
VOCAB_SIZE = len(ALPHABET) + 1


def encode_text(text: str) -> list[int]:
    """Target ids of a transcript (asr_text form); characters outside the alphabet are dropped."""
    return [CHAR_ID[ch] for ch in asr_text(text) if ch in CHAR_ID]


def decode_ids(ids) -> str:
    return "".join(ALPHABET[i - 1] for i in ids if i != BLANK)


# --- front end --------------------------------------------------------------------------------------

class LogMel(nn.Module):
    """Causal log-mel: hop `hop`, Hann window of `win` samples ending on each hop; the `win - hop`
    samples before a chunk are its history (zeros at the start of a conversation)."""

    def __init__(self, cfg: AsrConfig):
        super().__init__()
        import librosa.filters

        self.hop = cfg.sample_rate // 100
        self.win = cfg.sample_rate * cfg.window_ms // 1000
        self.n_fft = 1 << (self.win - 1).bit_length()
        self.history = self.win - self.hop
        fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=self.n_fft, n_mels=cfg.n_mels, fmin=40.0,
                                 fmax=cfg.sample_rate / 2)
        self.register_buffer("fb", torch.from_numpy(fb).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(self.win), persistent=False)

    def forward(self, pcm, history):
        """pcm [B, n * hop], history [B, win - hop] -> log-mel [B, n, n_mels], new history."""
        x = torch.cat([history, pcm], dim=-1)
        frames = x.unfold(-1, self.win, self.hop)
        power = torch.fft.rfft(frames * self.window, n=self.n_fft).abs().square()
        return torch.log(power @ self.fb.T + 1e-6), x[:, x.shape[-1] - self.history:]


# --- the causal transformer --------------------------------------------------------------------------

def rope_angles(positions, head_dim: int):
    """positions [B, T] -> cos, sin [B, 1, T, head_dim / 2]: each conversation at its own position."""
    inv = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim))
    ang = positions.float()[:, None, :, None] * inv
    return ang.cos(), ang.sin()


def rotate(x, cos, sin):
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class Block(nn.Module):
    def __init__(self, cfg: AsrConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(),
                                 nn.Linear(4 * cfg.d_model, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, mask):
        """Whole clips: x [B, T, D], mask [T, T] (True = may attend)."""
        B, T, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(B, T, D)))
        return x + self.drop(self.mlp(self.norm2(x)))

    def step(self, x, cos, sin, keys, values, rows, slot, mask):
        """One frame x [B, 1, D] against a ring buffer of keys and values [B, H, W, Dh]: this frame's
        key goes into `slot` (overwriting the frame that just left the window), then attention over
        the real slots (mask [B, 1, 1, W]). RoPE makes scores depend on positions, not on slots."""
        B, _, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, 3, self.n_heads, D // self.n_heads).unbind(1)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)  # [B, H, Dh]
        keys[rows, :, slot] = k
        values[rows, :, slot] = v
        if B != keys.shape[0]:  # some conversations have no frame this tick: attend for the others only
            keys, values = keys[rows], values[rows]
        y = F.scaled_dot_product_attention(q[:, :, None], keys, values, attn_mask=mask)
        x = x + self.proj(y.reshape(B, 1, D))
        return x + self.mlp(self.norm2(x))


@dataclass
class EarState:
    """One batch of conversations, each in its own row: mel history, every layer's keys and values in a
    ring buffer of `context_frames` slots, which slots hold a real frame (a conversation that joined
    later has empty ones), its frame count, and its last CTC symbol (to collapse repeats across
    frames). `Ear.step` updates the buffers in place."""
    history: torch.Tensor  # [B, win - hop]
    keys: torch.Tensor  # [layers, B, H, W, Dh]
    values: torch.Tensor  # [layers, B, H, W, Dh]
    valid: torch.Tensor  # [B, W] bool
    position: torch.Tensor  # [B] long: frames heard so far
    last_id: torch.Tensor  # [B] long

    def join(self, other: "EarState") -> "EarState":
        """Conversations joining a batch: `other`'s rows after these."""
        cat = lambda a, b, dim=0: torch.cat([a, b], dim=dim)  # noqa: E731
        return EarState(cat(self.history, other.history), cat(self.keys, other.keys, 1),
                        cat(self.values, other.values, 1), cat(self.valid, other.valid),
                        cat(self.position, other.position), cat(self.last_id, other.last_id))

    def row(self, r: int) -> "EarState":
        """Conversation r alone (views into these tensors)."""
        return EarState(self.history[r:r + 1], self.keys[:, r:r + 1], self.values[:, r:r + 1], self.valid[r:r + 1],
                        self.position[r:r + 1], self.last_id[r:r + 1])

    def reset_row(self, r: int) -> None:
        """Conversation r starts over: no history, no frames heard (its old keys are masked)."""
        self.history[r], self.valid[r], self.position[r], self.last_id[r] = 0.0, False, 0, BLANK

    def leave(self, row: int) -> "EarState":
        """A conversation leaving: the last row moves into `row` (one row copied, not the batch)."""
        last = self.position.shape[0] - 1
        if row != last:
            for t, dim in ((self.history, 0), (self.keys, 1), (self.values, 1), (self.valid, 0),
                           (self.position, 0), (self.last_id, 0)):
                t.select(dim, row).copy_(t.select(dim, last))
        return EarState(self.history[:last], self.keys[:, :last], self.values[:, :last], self.valid[:last],
                        self.position[:last], self.last_id[:last])


class Ear(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        a = cfg.asr
        self.sample_rate, self.frame_size = a.sample_rate, cfg.audio.frame_size
        self.mel = LogMel(a)
        self.hops = self.frame_size // self.mel.hop
        # Mel statistics of the training audio (set once by the trainer, saved with the weights): a
        # fixed normalisation streams, where per-utterance normalisation would need the future.
        self.register_buffer("mel_mean", torch.zeros(a.n_mels))
        self.register_buffer("mel_std", torch.ones(a.n_mels))
        self.embed = nn.Sequential(nn.Linear(self.hops * a.n_mels, a.d_model), nn.GELU(),
                                   nn.Linear(a.d_model, a.d_model))
        self.blocks = nn.ModuleList(Block(a) for _ in range(a.n_layers))
        self.norm = nn.LayerNorm(a.d_model)
        self.ctc_head = nn.Linear(a.d_model, a.ctc_per_frame * VOCAB_SIZE)
        self.speech_head = nn.Linear(a.d_model, 1)
        self.drop = nn.Dropout(a.dropout)

    @property
    def d_model(self) -> int:
        return self.cfg.asr.d_model

    # --- the network, for any number of frames ---------------------------------------------------------

    def features_from_mel(self, mel, spec_augment=None):
        """Whole clips: mel [B, T * hops, n_mels] -> frame features [B, T, D]."""
        B = mel.shape[0]
        x = (mel - self.mel_mean) / self.mel_std
        if spec_augment is not None:
            x = spec_augment(x)
        x = self.drop(self.embed(x.reshape(B, -1, self.hops * x.shape[-1])))
        T = x.shape[1]
        cos, sin = rope_angles(torch.arange(T, device=x.device)[None], self.d_model // self.cfg.asr.n_heads)
        # causal within the window: frame t sees frames t - context_frames + 1 .. t
        t = torch.arange(T, device=x.device)
        mask = (t[None, :] <= t[:, None]) & (t[None, :] > t[:, None] - self.cfg.asr.context_frames)
        for block in self.blocks:
            x = block(x, cos, sin, mask)
        return self.norm(x)

    def heads(self, features):
        """CTC log-probs [B, T * ctc_per_frame, V] and speech logits [B, T]."""
        B, T, _ = features.shape
        logits = self.ctc_head(features).view(B, T * self.cfg.asr.ctc_per_frame, VOCAB_SIZE)
        return logits.log_softmax(-1), self.speech_head(features).squeeze(-1)

    def forward(self, pcm, spec_augment=None):
        """Offline pass over whole clips: pcm [B, n * frame_size] -> (CTC log-probs, speech logits,
        features). Same numbers as streaming the clip frame by frame."""
        B = pcm.shape[0]
        mel, _ = self.mel(pcm, pcm.new_zeros(B, self.mel.history))
        T = mel.shape[1] // self.hops
        features = self.features_from_mel(mel[:, :T * self.hops], spec_augment=spec_augment)
        log_probs, speech = self.heads(features)
        return log_probs, speech, features

    # --- streaming -------------------------------------------------------------------------------------

    def init_state(self, batch: int = 1, device=None) -> EarState:
        device = device or self.mel_mean.device
        a = self.cfg.asr
        kv_shape = (a.n_layers, batch, a.n_heads, a.context_frames, a.d_model // a.n_heads)
        return EarState(torch.zeros(batch, self.mel.history, device=device),
                        torch.zeros(kv_shape, device=device), torch.zeros(kv_shape, device=device),
                        torch.zeros(batch, a.context_frames, dtype=torch.bool, device=device),
                        torch.zeros(batch, dtype=torch.long, device=device),
                        torch.full((batch,), BLANK, dtype=torch.long, device=device))

    @torch.no_grad()
    def step(self, pcm, state: EarState, rows=None):
        """pcm [B, n * frame_size] (n >= 1 whole frames) -> (pieces, features [B, n, D],
        speech_prob [B, n], state). pieces[b] is the new text of conversation b (greedy CTC).
        rows (long [B]): the state's rows these frames belong to, when a batch steps only the
        conversations that have a frame (default: all rows, in order)."""
        B, n_samples = pcm.shape
        if n_samples == 0 or n_samples % self.frame_size:
            raise ValueError(f"ear.step takes whole frames of {self.frame_size} samples, got {n_samples}")
        features = self._stream_features(pcm, state, rows)
        log_probs, speech = self.heads(features)
        if rows is None or len(rows) == state.position.shape[0]:
            pieces, state.last_id = collapse(log_probs.argmax(-1), state.last_id)
        else:
            pieces, state.last_id[rows] = collapse(log_probs.argmax(-1), state.last_id[rows])
        return pieces, features, torch.sigmoid(speech), state

    def _stream_features(self, pcm, state: EarState, rows=None):
        """The streaming network: whole frames of pcm -> features [B, n, D], state updated in place
        (only `rows` of it, when given and not all of them)."""
        B = pcm.shape[0]
        subset = rows is not None and len(rows) != state.position.shape[0]
        rows = torch.arange(B, device=pcm.device) if rows is None else rows
        pick = (lambda t: t[rows]) if subset else (lambda t: t)  # noqa: E731
        mel, history = self.mel(pcm, pick(state.history))
        x = self.embed(((mel - self.mel_mean) / self.mel_std).reshape(B, -1, self.hops * mel.shape[-1]))
        position = pick(state.position)
        features = []
        for t in range(x.shape[1]):
            slot = position % self.cfg.asr.context_frames
            state.valid[rows, slot] = True
            mask = pick(state.valid)[:, None, None, :]
            cos, sin = rope_angles(position[:, None], self.d_model // self.cfg.asr.n_heads)
            h = x[:, t:t + 1]
            for i, block in enumerate(self.blocks):
                h = block.step(h, cos[:, :, 0], sin[:, :, 0], state.keys[i], state.values[i], rows, slot, mask)
            features.append(self.norm(h))
            position = position + 1
        if subset:
            state.history[rows], state.position[rows] = history, position
        else:
            state.history, state.position = history, position
        return torch.cat(features, dim=1)

    @torch.no_grad()
    def transcribe(self, pcm, return_log_probs: bool = False):
        """One whole clip (1-D float tensor or array at 24 kHz) -> (text, [[word, start_s, end_s], ...]),
        greedy; with return_log_probs, (text, CTC log-probs [slots, vocab]) for a beam search."""
        pcm = torch.as_tensor(pcm, dtype=torch.float32).flatten()
        pad = (-pcm.numel()) % self.frame_size
        pcm = F.pad(pcm, (0, pad + self.frame_size))[None]  # one frame more: CTC emits a little late
        chunk = self.cfg.asr.context_frames * self.frame_size
        if pcm.shape[1] <= 4 * chunk:
            log_probs, _, _ = self(pcm)
        else:  # a long recording streams (same numbers) instead of one quadratic attention over it all
            state = self.init_state(1, pcm.device)
            features = torch.cat([self._stream_features(pcm[:, i:i + chunk], state)
                                  for i in range(0, pcm.shape[1], chunk)], dim=1)
            log_probs, _ = self.heads(features)
        text, words = words_from_ids(log_probs[0].argmax(-1).tolist(), self.frame_size / self.cfg.asr.ctc_per_frame
                                     / self.sample_rate)
        return (text, log_probs[0]) if return_log_probs else (text, words)


def collapse(ids, last_id):
    """Greedy CTC across frames: drop repeats (also of the previous step's last symbol) and blanks.
    ids [B, N] -> (list of B strings, new last ids [B])."""
    prev = torch.cat([last_id[:, None], ids[:, :-1]], dim=1)
    keep = (ids != prev) & (ids != BLANK)
    pieces = [decode_ids(row[k].tolist()) for row, k in zip(ids, keep)]
    return pieces, ids[:, -1].clone()


def words_from_ids(ids: list[int], slot_s: float) -> tuple[str, list]:
    """Greedy CTC over one utterance with word timings: a word starts at its first character's slot
    and ends after its last one."""
    words, chars, start, end, prev = [], [], 0.0, 0.0, BLANK
    for i, tok in enumerate(ids):
        if tok != prev and tok != BLANK:
            ch = ALPHABET[tok - 1]
            if ch == SPACE:
                if chars:
                    words.append(["".join(chars), round(start, 3), round(end, 3)])
                chars = []
            else:
                if not chars:
                    start = i * slot_s
                chars.append(ch)
                end = (i + 1) * slot_s
        prev = tok
    if chars:
        words.append(["".join(chars), round(start, 3), round(end, 3)])
    return " ".join(w[0] for w in words), words


def align_words(log_probs, text: str, slot_s: float) -> list | None:
    """CTC forced alignment (Viterbi) of `text` against one utterance's log-probs [slots, vocab]:
    [[word, start_s, end_s], ...] as words_from_ids times them, for a text another decoder chose
    (the LM's beam search). None when the text cannot fit the slots."""
    lp = torch.as_tensor(log_probs, dtype=torch.float32)
    labels = [BLANK]
    for ch in text:
        labels += [CHAR_ID[ch], BLANK]
    T, S = lp.shape[0], len(labels)
    if not text or T < len(text):
        return None if text else []
    lab = torch.tensor(labels)
    # a state may come from itself, the one before, or two before (skipping a blank between two
    # different characters)
    skip = torch.zeros(S, dtype=torch.bool)
    skip[2:] = (lab[2:] != BLANK) & (lab[2:] != lab[:-2])
    neg = torch.tensor(-1e30)
    score = torch.full((S,), -1e30)
    score[:2] = lp[0, lab[:2]]
    back = torch.zeros(T, S, dtype=torch.long)
    for t in range(1, T):
        stay, one = score, torch.cat([neg[None], score[:-1]])
        two = torch.where(skip, torch.cat([neg.repeat(2), score[:-2]]), neg)
        best = torch.stack([stay, one, two])
        arg = best.argmax(0)
        back[t] = arg
        score = best.gather(0, arg[None])[0] + lp[t, lab]
    state = S - 1 if score[S - 1] >= score[S - 2] else S - 2
    if score[state] <= -1e29:
        return None
    path = [0] * T
    for t in range(T - 1, -1, -1):
        path[t] = state
        state -= int(back[t, state])
    ids = [labels[s] for s in path]  # the text's characters, each on the slots it holds
    # as greedy ids: a character held over slots collapses, a repeat needs the blank between
    return words_from_ids(ids, slot_s)[1]


def lm_decoder(lm: ear_lm.CharLM | None, context: ContextConfig | None = None) -> ear_lm.BeamDecoder | None:
    """How the agent reads this ear's CTC output: the LM's beam search with the context's ear_lm_*
    settings (None without an LM or with ear_lm_beam 0: greedy)."""
    c = context or ContextConfig()
    if lm is None or c.ear_lm_beam <= 0:
        return None
    return ear_lm.BeamDecoder(lm, ALPHABET, BLANK, c.ear_lm_alpha, c.ear_lm_beta, c.ear_lm_beam)


def char_error_rate(hyp: str, ref: str) -> float:
    """Edits / reference characters, both sides in asr_text form (the ear's own alphabet)."""
    hyp, ref = asr_text(hyp), asr_text(ref)
    return edit_distance(hyp, ref) / len(ref) if ref else float(len(hyp) > 0)


# --- checkpoints ---------------------------------------------------------------------------------------

def load(path=None, device="cpu") -> Ear:
    """The ear from a safetensors checkpoint with its JSON config beside it (default: the shipped one)."""
    path = Path(path) if path else SHIPPED
    cfg_path = config_json_path(path)
    if not path.exists() or not cfg_path.exists():
        raise FileNotFoundError(f"no ear checkpoint at {path} (with {cfg_path.name} beside it); "
                                f"train one with train_asr.py or pass --checkpoint")
    cfg = from_dict(json.loads(cfg_path.read_text(encoding="utf-8")))
    ear = Ear(cfg)
    state = {k: v.float() for k, v in load_safetensors(path, device="cpu").items()}
    ear.load_state_dict(state)
    return ear.to(device).eval()


# --- CLI ---------------------------------------------------------------------------------------------

def transcribe_files(ear: Ear, paths, decoder=None) -> list[dict]:
    """One result per file, in order; a file that cannot be read or is empty gets an `error` and the
    others are still transcribed. decoder (ear_lm.BeamDecoder): its reading instead of greedy."""
    from audio_io import load_audio

    results = []
    for path in paths:
        try:
            pcm = load_audio(path, sr=ear.sample_rate)
            if pcm.size == 0:
                raise ValueError("the file has no audio samples")
            if decoder is None:
                text, words = ear.transcribe(pcm)
            else:  # the LM's reading, timed on the same CTC output
                _, log_probs = ear.transcribe(pcm, return_log_probs=True)
                text = decoder.decode(log_probs)
                words = align_words(log_probs, text, ear.frame_size / ear.cfg.asr.ctc_per_frame / ear.sample_rate)
            results.append({"path": str(path), "text": text, "words": words})
        except Exception as e:  # noqa: BLE001  (any bad file: report it on its line, carry on)
            results.append({"path": str(path), "error": f"{type(e).__name__}: {e}"})
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="the ear: streaming Telugu CTC recogniser")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("transcribe", help="print one JSON line per file: path, text, words")
    t.add_argument("inputs", nargs="+", help="audio files (any rate and channel count)")
    t.add_argument("--checkpoint", help="ear checkpoint (default checkpoints/asr.safetensors)")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--lm", nargs="?", const="shipped", help="read with the ear's language model (ear_lm.py; "
                   "default checkpoints/ear_lm.json) instead of greedy, as the agent does")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        ear = load(args.checkpoint)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    decoder = None
    if args.lm:
        decoder = lm_decoder(ear_lm.load(None if args.lm == "shipped" else args.lm))
    failed = 0
    for result in transcribe_files(ear, args.inputs, decoder):
        failed += "error" in result
        print(json.dumps(result, ensure_ascii=False), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
