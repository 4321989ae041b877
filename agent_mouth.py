"""The agent's mouth: agent text -> pitch-codec frames in a chosen voice, one 40 ms frame a step.

The brain writes the whole answer before the mouth needs it, so the text encoder reads all of it
(look-ahead over text is free); only the frame decoder is causal, because frames leave one at a time.

    text --spoken form (numbers as words)--> characters + ^ (start) and $ (end)
      --> embedding + voice --> conv + transformer encoder (bidirectional over the answer)
      --> duration per character (frames, predicted)
      --> per frame: [this character's state, the next one's, where in the character we are]
      --> GRU (causal) --> the codec's continuous envelope latent, log2 F0 of the 4 patches, voicing
      --> codes: codebook 0 = the codec's PitchQuantizer of that F0 track,
                 codebooks 1..7 = the codec's own RVQ of that latent; the codec decodes them.

Input is characters, not BPE pieces: Telugu script is close to phonemic (a character is a sound or
a vowel sign on one), so a character is the unit a duration belongs to, and its 76 symbols cover
every answer the brain can write; a BPE piece spans several sounds with no timing inside it.

Streaming (a batch of conversations, one row each):
    mouth = agent_mouth.load()
    state = mouth.init_state(batch, voices)       # voices: names (["lakshmi", ...]) or [B, 192]
    mouth.say(state, row, text)                   # queue an answer for a row (encoder runs here)
    codes, spoken, state = mouth.step(state)      # codes [B, K]; spoken[row] = words finished
    mouth.stop(state, row)                        # barge-in: drop what the row had left to say
A row with nothing to say gets the codec's silence codes. Stepping equals `synthesize` (offline)
and a row stepped in a batch equals the row alone (tests/test_mouth.py).
"""
from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from checkpoint_io import load_safetensors
from config import Config, MouthConfig, config_json_path, from_dict

ROOT = Path(__file__).resolve().parent
SHIPPED = ROOT / "checkpoints" / "mouth.safetensors"

# --- symbols --------------------------------------------------------------------------------------

PAD, BOS, EOS = 0, 1, 2  # BOS carries the silence before the first word, EOS the closing pause
PUNCTUATION = " .,?!:;-"
TELUGU = [ch for ch in map(chr, range(0x0C00, 0x0C80)) if unicodedata.category(ch) != "Cn"]
SYMBOLS = ["<pad>", "^", "$"] + list(PUNCTUATION) + TELUGU
SYMBOL_ID = {s: i for i, s in enumerate(SYMBOLS)}


class MouthTextError(ValueError):
    """Text the mouth cannot speak: empty, or characters outside Telugu and light punctuation."""


def spoken_form(text: str) -> str:
    """What is said: numbers, dates and abbreviations as Telugu words, tidy spacing (the same form
    telugu_tts hands to eSpeak, so training text and spoken audio match)."""
    from telugu_text import normalize_text
    return " ".join(normalize_text(text).split())


def encode_text(text: str) -> tuple[str, list[int]]:
    """-> (spoken form, symbol ids with ^ and $). Raises MouthTextError on what cannot be said."""
    if not isinstance(text, str):
        raise MouthTextError(f"text must be a str, not {type(text).__name__}")
    spoken = spoken_form(text)
    if not any("\u0c00" <= ch <= "\u0c7f" for ch in spoken):
        raise MouthTextError(f"nothing to say in {text!r}: the mouth speaks Telugu text")
    unknown = sorted({ch for ch in spoken if ch not in SYMBOL_ID or SYMBOL_ID[ch] <= EOS})
    if unknown:
        raise MouthTextError(f"cannot say {', '.join(repr(c) for c in unknown)} in {text!r}: the mouth "
                             f"speaks Telugu letters and {PUNCTUATION.strip()!r} (write other scripts out in Telugu)")
    return spoken, [BOS] + [SYMBOL_ID[ch] for ch in spoken] + [EOS]


def word_ends(spoken: str) -> list[tuple[str, int]]:
    """(word, symbol index of its last letter) for each word of the spoken form, its edge
    punctuation cut (as telugu_tts words are); symbol index = character index + 1 (after ^)."""
    out = []
    for m in re.finditer(r"\S+", spoken):
        a, b = m.span()
        while a < b and spoken[a] in PUNCTUATION:
            a += 1
        while b > a and spoken[b - 1] in PUNCTUATION:
            b -= 1
        if a < b:
            out.append((spoken[a:b], b))  # last letter b - 1 -> symbol b
    return out


# --- the model ------------------------------------------------------------------------------------

def sinusoid(n: int, dim: int, device=None) -> torch.Tensor:
    pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(n, dim, device=device)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return pe


POSITION_FEATURES = 4


def position_features(durations: torch.Tensor, frame_symbol: torch.Tensor, frame_offset: torch.Tensor):
    """Where a frame sits inside its symbol: [share done, frames in, frames left, log length]."""
    d = durations.gather(-1, frame_symbol).float().clamp(min=1)
    k = frame_offset.float()
    return torch.stack([(k + 0.5) / d, k / 10, (d - 1 - k) / 10, torch.log1p(d) / 3], dim=-1)


def expand(durations: torch.Tensor):
    """durations [B, S] (frames per symbol) -> frame_symbol, frame_offset [B, T] and the frame
    mask [B, T]; T = the longest row's total."""
    B, S = durations.shape
    total = durations.sum(-1)
    T = int(total.max()) if B else 0
    ends = durations.cumsum(-1)  # [B, S]
    t = torch.arange(T, device=durations.device)
    frame_symbol = torch.searchsorted(ends, t.expand(B, T).contiguous(), right=True).clamp(max=S - 1)
    starts = ends - durations
    frame_offset = t - starts.gather(-1, frame_symbol)
    return frame_symbol, frame_offset, t < total[:, None]


def round_durations(frames: torch.Tensor) -> torch.Tensor:
    """Continuous frames per symbol -> whole frames whose running total stays within half a frame
    of the continuous one (rounding each alone would drift by a frame every few symbols)."""
    ends = torch.round(frames.clamp(min=0).cumsum(-1))
    return torch.diff(ends, dim=-1, prepend=torch.zeros_like(ends[..., :1])).long()


class Mouth(nn.Module):
    def __init__(self, cfg: Config, codec=None):
        super().__init__()
        m: MouthConfig = cfg.mouth
        self.cfg, self.m = cfg, m
        c = cfg.codec
        self.latent_dim, self.patches = c.latent_dim, c.frame_size // c.patch_size
        self.f0_min, self.span = c.f0_min, math.log2(c.f0_max / c.f0_min)
        self.embed = nn.Embedding(len(SYMBOLS), m.d_model, padding_idx=PAD)
        self.voice_in = nn.Linear(m.voice_dim, m.d_model)
        self.conv = nn.Conv1d(m.d_model, m.d_model, m.conv_kernel, padding=m.conv_kernel // 2)
        layer = nn.TransformerEncoderLayer(m.d_model, m.n_heads, 4 * m.d_model, m.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, m.n_layers, enable_nested_tensor=False)
        self.enc_norm = nn.LayerNorm(m.d_model)
        self.duration = nn.Sequential(nn.Conv1d(m.d_model, m.d_model, 3, padding=1), nn.GELU(),
                                      nn.Conv1d(m.d_model, 1, 1))
        self.frame_in = nn.Linear(2 * m.d_model + POSITION_FEATURES, m.frame_hidden)
        self.frame_voice = nn.Linear(m.voice_dim, m.frame_hidden)
        self.gru = nn.GRU(m.frame_hidden, m.frame_hidden, m.frame_layers, batch_first=True)
        self.head = nn.Sequential(nn.Linear(m.frame_hidden, m.frame_hidden), nn.GELU(),
                                  nn.Linear(m.frame_hidden, self.latent_dim + self.patches + 1))
        self.register_buffer("voice_table", torch.zeros(len(m.voices), m.voice_dim))
        self.register_buffer("silence_codes", torch.zeros(c.n_codebooks, dtype=torch.long))
        object.__setattr__(self, "codec", codec)  # not a submodule: its weights are the codec's, not trained here

    # voices ---------------------------------------------------------------------------------------
    def voice_embeddings(self, voices) -> torch.Tensor:
        """Names (the config's voices) or embeddings [B, voice_dim] -> [B, voice_dim]."""
        if isinstance(voices, torch.Tensor):
            return voices.to(self.voice_table).reshape(-1, self.m.voice_dim)
        if isinstance(voices, str):
            voices = [voices]
        rows = []
        for v in voices:
            if v not in self.m.voices:
                raise KeyError(f"unknown voice {v!r} (the mouth speaks {', '.join(self.m.voices)})")
            rows.append(self.m.voices.index(v))
        return self.voice_table[torch.tensor(rows, dtype=torch.long, device=self.voice_table.device)]

    # the networks ---------------------------------------------------------------------------------
    def encode(self, symbols, voice, mask=None):
        """symbols [B, S], voice [B, voice_dim], mask [B, S] (True = real) -> states [B, S, d],
        predicted log(1 + frames) [B, S]."""
        x = self.embed(symbols) + self.voice_in(voice)[:, None]
        x = x + self.conv(x.transpose(1, 2)).transpose(1, 2)
        x = x + sinusoid(x.shape[1], x.shape[2], x.device)
        h = self.encoder(x, src_key_padding_mask=None if mask is None else ~mask)
        h = self.enc_norm(h)
        return h, self.duration(h.transpose(1, 2))[:, 0]

    def frame_inputs(self, states, durations, voice):
        """Encoder states [B, S, d] and whole-frame durations [B, S] -> GRU inputs [B, T, hidden]
        and the frame mask [B, T]."""
        frame_symbol, frame_offset, frame_mask = expand(durations)
        S = states.shape[1]
        cur = states.gather(1, frame_symbol[..., None].expand(-1, -1, states.shape[2]))
        nxt = states.gather(1, (frame_symbol + 1).clamp(max=S - 1)[..., None].expand(-1, -1, states.shape[2]))
        feats = position_features(durations, frame_symbol, frame_offset)
        x = self.frame_in(torch.cat([cur, nxt, feats], dim=-1)) + self.frame_voice(voice)[:, None]
        return x, frame_mask

    def frame_outputs(self, x, hidden=None):
        """GRU inputs [B, T, hidden] -> (latent [B, latent, T], log2 F0 in octaves above f0_min
        [B, T, patches], voicing logit [B, T], new hidden)."""
        y, hidden = self.gru(x, hidden)
        out = self.head(y + x)
        latent = out[..., :self.latent_dim].transpose(1, 2)
        return latent, out[..., self.latent_dim:-1], out[..., -1], hidden

    def forward(self, symbols, symbol_mask, voice, durations):
        """Training pass with the true durations: (latent, log2 F0, voicing, log-duration)."""
        states, log_dur = self.encode(symbols, voice, symbol_mask)
        x, _ = self.frame_inputs(states, durations, voice)
        latent, octaves, voicing, _ = self.frame_outputs(x)
        return latent, octaves, voicing, log_dur

    # frames -> codec codes ------------------------------------------------------------------------
    @torch.no_grad()
    def to_codes(self, latent, octaves, voicing):
        """latent [B, latent, T], octaves [B, T, patches], voicing [B, T] -> codes [B, K, T]."""
        voiced = (voicing > 0)[..., None]
        f0 = self.f0_min * torch.exp2(octaves.clamp(0, self.span)) * voiced
        pitch = self.codec.pitch.encode(f0.reshape(f0.shape[0], -1))
        envelope = self.codec.quantizer.encode(latent, self.codec.n_codebooks - 1)
        return torch.cat([pitch[:, None], envelope], dim=1)

    @torch.no_grad()
    def plan(self, text: str, voice: torch.Tensor, pace: float = 1.0):
        """One answer of one row: (GRU inputs [T, hidden], word ends as (word, frame index))."""
        spoken, ids = encode_text(text)
        symbols = torch.tensor([ids], device=voice.device)
        states, log_dur = self.encode(symbols, voice[None])
        durations = round_durations(torch.expm1(log_dur).clamp(min=0) * pace)
        if int(durations.sum()) == 0:
            durations[0, 1] = 1
        x, _ = self.frame_inputs(states, durations, voice[None])
        ends = durations[0].cumsum(0)
        words = [(w, max(0, int(ends[i]) - 1)) for w, i in word_ends(spoken)]
        return x[0], words

    @torch.no_grad()
    def synthesize(self, text: str, voice, pace: float = 1.0):
        """Offline: the whole answer at once -> codes [K, T] and word ends (word, frame)."""
        v = self.voice_embeddings(voice if isinstance(voice, torch.Tensor) else [voice])[0]
        x, words = self.plan(text, v, pace)
        latent, octaves, voicing, _ = self.frame_outputs(x[None])
        return self.to_codes(latent, octaves, voicing)[0], words

    # streaming ------------------------------------------------------------------------------------
    def init_state(self, batch: int, voices) -> "MouthState":
        v = self.voice_embeddings(voices)
        if v.shape[0] == 1 and batch > 1:
            v = v.expand(batch, -1)
        if v.shape[0] != batch:
            raise ValueError(f"{v.shape[0]} voices for a batch of {batch}")
        hidden = torch.zeros(self.m.frame_layers, batch, self.m.frame_hidden, device=v.device)
        return MouthState(voice=v.clone(), hidden=hidden, queue=[[] for _ in range(batch)],
                          current=[None] * batch)

    def say(self, state: "MouthState", row: int, text: str, pace: float = 1.0) -> None:
        """Queue an answer for a row: it starts when what the row is saying ends."""
        if not 0 <= row < len(state.queue):
            raise IndexError(f"row {row} out of range for a batch of {len(state.queue)}")
        x, words = self.plan(text, state.voice[row], pace)
        state.queue[row].append(_Utterance(x, words))

    def stop(self, state: "MouthState", row: int) -> str:
        """Barge-in: the row stops now (silence from the next step) and forgets what was queued.
        Returns what it had left to say, from the word it was in (so a caller can say it again
        when the barge-in was only a backchannel)."""
        u, left = state.current[row], []
        if u is not None:
            left += [w for w, end in u.words if end >= u.frame]
        for q in state.queue[row]:
            left += [w for w, _ in q.words]
        state.queue[row].clear()
        state.current[row] = None
        return " ".join(left)

    def speaking(self, state: "MouthState", row: int) -> bool:
        return state.current[row] is not None or bool(state.queue[row])

    @torch.no_grad()
    def step(self, state: "MouthState"):
        """One 40 ms frame for every row -> (codes [B, K], spoken: per row the words whose last
        frame this was, state). The state is updated in place and returned."""
        B = len(state.queue)
        x = torch.zeros(B, self.m.frame_hidden, device=state.voice.device)
        active = torch.zeros(B, dtype=torch.bool)
        for r in range(B):
            if state.current[r] is None and state.queue[r]:
                state.current[r] = state.queue[r].pop(0)
                state.hidden[:, r] = 0  # every answer starts from the state it was trained from
            u = state.current[r]
            if u is not None:
                x[r] = u.inputs[u.frame]
                active[r] = True
        codes = self.silence_codes.expand(B, -1).clone()
        spoken = [[] for _ in range(B)]
        if active.any():
            rows = active.nonzero()[:, 0].to(x.device)
            latent, octaves, voicing, h = self.frame_outputs(x[rows][:, None], state.hidden[:, rows].contiguous())
            state.hidden[:, rows] = h
            codes[rows] = self.to_codes(latent, octaves, voicing)[..., 0]
            for r in rows.tolist():
                u = state.current[r]
                spoken[r] = [w for w, end in u.words if end == u.frame]
                u.frame += 1
                if u.frame >= len(u.inputs):
                    state.current[r] = None
        return codes, spoken, state


@dataclass
class _Utterance:
    inputs: torch.Tensor  # [T, hidden] GRU inputs of every frame of the answer
    words: list  # (word, last frame)
    frame: int = 0


@dataclass
class MouthState:
    """One row per conversation: its voice, the GRU state, what it is saying and what is queued."""
    voice: torch.Tensor  # [B, voice_dim]
    hidden: torch.Tensor  # [layers, B, hidden]
    queue: list = field(default_factory=list)  # per row: list of _Utterance
    current: list = field(default_factory=list)  # per row: _Utterance or None

    def join(self, other: "MouthState") -> "MouthState":
        """other's rows after these (a conversation joins the batch)."""
        return MouthState(torch.cat([self.voice, other.voice]), torch.cat([self.hidden, other.hidden], 1),
                          self.queue + other.queue, self.current + other.current)

    def rows(self, order: list[int]) -> "MouthState":
        """These rows, in this order (a conversation leaves: the others keep theirs)."""
        return MouthState(self.voice[order], self.hidden[:, order], [self.queue[i] for i in order],
                          [self.current[i] for i in order])


# --- checkpoints ----------------------------------------------------------------------------------

def silence_codes(codec) -> torch.Tensor:
    """The codec's codes for digital silence, after its analysis has settled."""
    with torch.no_grad():
        return codec.encode(torch.zeros(1, codec.frame_size * 10))[0, :, -1].long()


def build(cfg: Config, codec=None, voice_bank=None) -> Mouth:
    """A fresh mouth on its codec, with the voice table from the voice bank (for training)."""
    import telugu_codec_fixed
    from speaker_embeddings import VoiceBank

    codec = codec or telugu_codec_fixed.load(ROOT / cfg.mouth.codec_checkpoint)
    cfg.codec = codec.cfg  # the mouth speaks this codec's frames: its config travels with the mouth
    model = Mouth(cfg, codec)
    bank = voice_bank or VoiceBank.load()
    with torch.no_grad():
        model.voice_table.copy_(torch.stack([bank.embedding(v) for v in cfg.mouth.voices]))
        model.silence_codes.copy_(silence_codes(codec))
    return model


def load(path=None, device="cpu", codec=None) -> Mouth:
    """The shipped mouth (no path) or an exported one: safetensors + JSON config beside it; the
    codec named in that config is loaded too (or pass one)."""
    import telugu_codec_fixed

    path = Path(path) if path else SHIPPED
    cfg_path = config_json_path(path)
    if not path.exists() or not cfg_path.exists():
        raise FileNotFoundError(f"no mouth checkpoint at {path} (with {cfg_path.name} beside it); "
                                f"train one with train_mouth.py")
    cfg = from_dict(json.loads(cfg_path.read_text(encoding="utf-8")))
    if codec is None:
        codec_path = Path(cfg.mouth.codec_checkpoint)
        codec = telugu_codec_fixed.load(codec_path if codec_path.is_absolute() else ROOT / codec_path, device)
    model = Mouth(cfg, codec)
    model.load_state_dict(load_safetensors(path), strict=True)
    return model.to(device).eval()


def n_params(model: Mouth) -> int:
    return sum(p.numel() for p in model.parameters())
