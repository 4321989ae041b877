"""The full-duplex Telugu speech-to-speech model: a Moshi-style RQ-transformer, small enough to
step once per 40 ms frame on one CPU thread.

    per frame t:  user stream(t) + agent text(t-1) + agent codes(t-1, delayed) + user text(t-1) + voice
                  -> temporal transformer (causal over frames, sliding-window KV cache) -> h_t
                  h_t -> user-text head (streaming transcript of what the user has said)
                  h_t -> agent-text head (the agent's inner monologue)
                  h_t -> depth transformer over the K agent codebooks: step k reads proj_k(h_t) +
                         the token before it (agent text for k=0, codebook k-1 otherwise)

Time alignment ("step" s = one temporal step = one 40 ms frame; delay d = cfg.acoustic_delay):

    step s predicts | user text[s], agent text[s], codebook 0 of frame s, codebooks 1..K-1 of frame s-d
    step s reads    | user input of frame s, and the tokens step s-1 predicted (the "start" token
                    | at s = 0, the "empty" code while a delayed codebook has no frame yet)

The delay (Moshi) lets codebooks 1.. of a frame be predicted one step later, once the temporal
transformer has read that frame's codebook 0: the coarse code steers the fine ones. `apply_delay`
maps frame-time codes [B, K, T] to step time and `undo_delay` back; training and streaming both go
through them. With d = 1 the streaming generator's first agent frame comes out at step 1.

Batch (all time axes are frames of the codec, T of them; channels first, as the codec gives them):
    user         "mel":    pcm float [B, 1, T * frame_size] (or [B, T * frame_size]); the model
                           takes the log-mel itself (80 mels, 10 ms hop, 4 vectors per frame)
                 "latent": codec.latent(pcm), float [B, latent_dim, T]
                 "ear":    the ear's frame features (telugu_asr.Ear.forward), float [B, ear_dim, T]:
                           the model hears through the frozen recogniser instead of learning to
                           (streaming, model.streaming(ear=...) runs the ear on pcm frames)
                 "codes":  codec.encode(pcm), long [B, >=K, T] (the first K codebooks are read)
    agent_codes  long [B, >=K, T]: codec.encode of the agent's channel, frame time (not delayed)
    agent_text   long [B, T]: frame-aligned agent text (Tokenizer.align_words, anchor="start")
    user_text    long [B, T]: frame-aligned user transcript (align_words, anchor="end")
    voice        float [B, voice_dim] or absent: the agent voice's speaker embedding (zeros = none)
    clock        float [B, CLOCK_DIM] or absent: clock_features(now) (zeros = unknown; cfg.clock only)
    mask         bool [B, T] or absent: True on real frames, False on batch padding

`forward(batch)` returns logits in step time: user_text [B, T, V], agent_text [B, T, V],
agent_codes [B, K, T, card] (aligned with apply_delay(agent_codes)). `loss(batch)` weighs them.

Streaming: `gen = model.streaming(voice=...)`; `out = gen.step(user_frame)` once per frame; each
generator owns its KV caches and previous tokens, so any number of conversations can share a model.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from checkpoint_io import codec_hash, load_safetensors
from s2s_clock import CLOCK_DIM, clock_features
from config import Config, config_json_path, from_dict
from telugu_tokenizer import PAD_ID

ROOT = Path(__file__).resolve().parent
SHIPPED = ROOT / "checkpoints" / "s2s.safetensors"
N_MELS = 80
PAD_LOSS_WEIGHT = 0.5  # Moshi halves the loss on text padding, which fills most frames


# --- the clock -----------------------------------------------------------------------------------
# The moment the agent is told, as one-hot fields: s2s_clock.clock_features (the batching code needs it too).

def fill_missing_clock(model: "S2SModel", state: dict) -> dict:
    """Weights saved before the clock existed: a zero clock projection, the same model as before."""
    if getattr(model, "clock_in", None) is not None and "clock_in.weight" not in state:
        state = dict(state, **{"clock_in.weight": torch.zeros_like(model.clock_in.weight)})
    return state


# --- layers -------------------------------------------------------------------------------------

def transposed(weight):
    """weight [..., out, in] -> a contiguous [..., in, out] copy, kept on the weight and made again
    only when the weight changes (an optimizer step, load_state_dict, a move to another device)."""
    key = (weight._version, weight.data_ptr())
    hit = getattr(weight, "_transposed", None)
    if hit is None or hit[0] != key:
        hit = weight._transposed = (key, weight.detach().transpose(-1, -2).contiguous())
    return hit[1]


def few_rows(x, weight) -> bool:
    """A batched streaming step: more than one row, no autograd. MKL's kernel for x @ W.T is
    1.2-1.5x slower than x @ (W.T contiguous) at 2-7 rows on the CPUs measured (tools/tick_cost.py);
    from 8 rows both take the same kernel. One row keeps F.linear (a gemv either way): a lone
    conversation's numbers stay as they were."""
    return x.numel() > x.shape[-1] and not torch.is_grad_enabled() and not weight.is_inference()


class Linear(nn.Linear):
    """nn.Linear whose batched streaming steps multiply by its cached transpose (`few_rows`)."""

    def forward(self, x):
        if not few_rows(x, self.weight):
            return F.linear(x, self.weight, self.bias)
        y = x @ transposed(self.weight)
        return y if self.bias is None else y + self.bias


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5, init: float = 1.0):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.full((dim,), init))

    def forward(self, x):
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


def rope(positions: torch.Tensor, head_dim: int, base: float = 10000.0):
    """cos, sin [T, head_dim / 2] for absolute positions. The angles are taken in float64: an
    hour is 90,000 frames, where float32 angles would lose about 0.01 rad."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64, device=positions.device) / head_dim)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None]
    return angles.cos().float(), angles.sin().float()


def apply_rope(x, cos, sin):  # x [B, H, T, D], cos/sin [T, D/2]
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class KVCache:
    """A fixed ring buffer of `capacity` keys and values for one attention layer, for a batch of
    conversations (row b of k and v is conversation b).

    The key of position p is written, already rotated by RoPE at p, into slot p % capacity. Since
    attention over a set of keys does not depend on their order, the ring never needs shifting:
    once full, each new frame overwrites the oldest one, the query at position p sees exactly
    positions p - capacity + 1 .. p (the training mask's window), memory and step time stay
    constant, and positions keep counting up for as long as the conversation runs.

    Rows may stand at different positions (conversations that joined a batch at different times):
    `append` then takes a RowPlan, each row writes its own slot and a mask hides the slots a
    younger row has not filled yet. Slots fill in order from 0, so a row's valid slots are always
    a prefix of the ring."""

    def __init__(self, batch: int, n_heads: int, head_dim: int, capacity: int, device=None):
        self.capacity = capacity
        self.k = torch.zeros(batch, n_heads, capacity, head_dim, device=device)
        self.v = torch.zeros_like(self.k)
        self.count = 0  # positions written since reset (all rows together; RowPlan rows keep their own)

    def reset(self):
        self.count = 0

    @property
    def length(self) -> int:
        return min(self.count, self.capacity)

    def append(self, k, v, plan: "RowPlan | None" = None):
        """k, v [B, H, 1, D] -> (keys, values [B, H, length, D], mask [B, 1, 1, length] or None).
        Without a plan every row writes slot count % capacity (the depth transformer's tokens)."""
        if plan is None:
            slot = self.count % self.capacity
            self.k[:, :, slot] = k[:, :, 0]
            self.v[:, :, slot] = v[:, :, 0]
            self.count += 1
            n = self.length
            return self.k[:, :, :n], self.v[:, :, :n], None
        self.k[plan.rows, :, plan.slots] = k[:, :, 0]
        self.v[plan.rows, :, plan.slots] = v[:, :, 0]
        self.count = max(self.count, plan.length)
        keys, values = self.k[:, :, :plan.length], self.v[:, :, :plan.length]
        if not plan.all_rows:  # some conversations have no frame this tick: read only the others
            keys, values = keys[plan.rows], values[plan.rows]
        return keys, values, plan.mask


@dataclass
class RowPlan:
    """Where one batched step writes and what it reads, shared by every layer: the rows stepped
    (indices into the cache's batch), each row's slot (its position % capacity), how many slots
    the oldest row fills, and the mask of the younger rows' empty slots (None when every row has
    the same number of keys, so a batch of one attends exactly as a lone conversation did)."""
    rows: torch.Tensor  # long [B]
    slots: torch.Tensor  # long [B]
    length: int
    mask: torch.Tensor | None  # bool [B, 1, 1, length]
    all_rows: bool

    @staticmethod
    def of(rows, positions, capacity: int, all_rows: bool) -> "RowPlan":
        """rows, positions: lists of ints (the row of each conversation stepped, its step index)."""
        filled = [min(p + 1, capacity) for p in positions]
        length = max(filled)
        mask = None
        if min(filled) < length:
            mask = (torch.arange(length)[None] < torch.tensor(filled)[:, None])[:, None, None, :]
        return RowPlan(torch.tensor(rows), torch.tensor([p % capacity for p in positions]), length, mask, all_rows)


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float, n_layers: int):
        super().__init__()
        assert d_model % n_heads == 0
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qkv = Linear(d_model, 3 * d_model, bias=False)
        self.out = Linear(d_model, d_model, bias=False)
        self.out.residual_layers = n_layers  # scaled init (nanoGPT's c_proj)
        self.dropout = dropout

    def _heads(self, x):
        B, T, _ = x.shape
        return self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)

    def forward(self, x, cos, sin, mask=None):
        """Whole sequence; mask None = plain causal, else a bool [T, T] (True = may attend)."""
        B, T, C = x.shape
        q, k, v = self._heads(x)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=mask is None)
        return self.out(y.transpose(1, 2).reshape(B, T, C))

    def step(self, x, cos, sin, cache: KVCache, plan: RowPlan | None = None):
        """One new position x [B, 1, C] attending to itself and the cached ones (cos, sin
        [B, 1, 1, D/2]: each row at its own position)."""
        B, _, C = x.shape
        q, k, v = self._heads(x)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        keys, values, mask = cache.append(k, v, plan)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(B, 1, C))


class MLP(nn.Module):
    """Gated (SwiGLU) feed-forward; both input projections in one matmul."""

    def __init__(self, d_model: int, n_layers: int):
        super().__init__()
        hidden = 64 * math.ceil(8 * d_model / 3 / 64)
        self.inp = Linear(d_model, 2 * hidden, bias=False)
        self.out = Linear(hidden, d_model, bias=False)
        self.out.residual_layers = n_layers

    def forward(self, x):
        gate, up = self.inp(x).chunk(2, dim=-1)
        return self.out(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float, n_layers: int):
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(d_model), RMSNorm(d_model)
        self.attn = Attention(d_model, n_heads, dropout, n_layers)
        self.mlp = MLP(d_model, n_layers)
        self.dropout = dropout

    def forward(self, x, cos, sin, mask=None):
        x = x + F.dropout(self.attn(self.norm1(x), cos, sin, mask), self.dropout, self.training)
        return x + F.dropout(self.mlp(self.norm2(x)), self.dropout, self.training)

    def step(self, x, cos, sin, cache, plan=None):
        x = x + self.attn.step(self.norm1(x), cos, sin, cache, plan)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """Pre-norm causal transformer with RoPE. `window` limits how far back a position looks
    (the temporal transformer's context_frames); None looks at everything before it."""

    def __init__(self, d_model: int, n_layers: int, n_heads: int, dropout: float, window: int | None = None):
        super().__init__()
        self.blocks = nn.ModuleList(Block(d_model, n_heads, dropout, n_layers) for _ in range(n_layers))
        self.norm = RMSNorm(d_model)
        self.n_heads, self.head_dim, self.window = n_heads, d_model // n_heads, window

    def forward(self, x, start: int = 0):
        T = x.shape[1]
        cos, sin = rope(torch.arange(start, start + T, device=x.device), self.head_dim)
        mask = None
        if self.window is not None and T > self.window:
            i = torch.arange(T, device=x.device)
            mask = (i[None] <= i[:, None]) & (i[None] > i[:, None] - self.window)
        for block in self.blocks:
            x = block(x, cos, sin, mask)
        return self.norm(x)

    def new_caches(self, batch: int, capacity: int, device=None) -> list[KVCache]:
        return [KVCache(batch, self.n_heads, self.head_dim, capacity, device) for _ in self.blocks]

    def step(self, x, cos, sin, caches: list[KVCache], plan: RowPlan | None = None):
        for block, cache in zip(self.blocks, caches):
            x = block.step(x, cos, sin, cache, plan)
        return self.norm(x)


class LogMel(nn.Module):
    """Causal log-mel features at 100 Hz: 20 ms Hann windows ending on each 10 ms hop, so frame t's
    `frame_size` samples give frame_size / hop vectors, using `context` samples before them."""

    def __init__(self, sample_rate: int, frame_size: int, n_mels: int = N_MELS):
        super().__init__()
        import librosa.filters

        self.hop = sample_rate // 100
        if frame_size % self.hop:
            raise ValueError(f"frame_size {frame_size} is not a whole number of 10 ms hops")
        self.win = 2 * self.hop
        self.n_fft = 1 << (self.win - 1).bit_length()
        self.context = self.win - self.hop
        self.dim = frame_size // self.hop * n_mels
        fb = librosa.filters.mel(sr=sample_rate, n_fft=self.n_fft, n_mels=n_mels)
        self.register_buffer("fb", torch.from_numpy(fb).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(self.win), persistent=False)

    def forward(self, pcm, history=None):
        """pcm [B, n * frame_size] -> [B, n, dim]; history [B, context]: the samples before pcm
        (zeros at the start of a conversation or a training crop)."""
        if history is None:
            history = pcm.new_zeros(pcm.shape[0], self.context)
        frames = torch.cat([history, pcm], dim=-1).unfold(-1, self.win, self.hop)
        power = torch.fft.rfft(frames * self.window, n=self.n_fft).abs().square()
        feats = torch.log(power @ self.fb.T + 1e-6)
        return feats.reshape(pcm.shape[0], -1, self.dim)


# --- acoustic delay ------------------------------------------------------------------------------

def apply_delay(codes, delay: int, fill: int):
    """Frame time -> step time: codebook 0 stays, codebooks 1.. move `delay` steps later.
    codes [B, K, T] -> [B, K, T]; the first `delay` steps of codebooks 1.. hold `fill` (the empty
    token) and their last `delay` frames fall off the end (pad T by `delay` frames to keep them)."""
    if delay == 0 or codes.shape[-1] == 0:
        return codes.clone()
    out = torch.full_like(codes, fill)
    out[:, 0] = codes[:, 0]
    out[:, 1:, delay:] = codes[:, 1:, :-delay]
    return out


def undo_delay(delayed, delay: int, fill: int):
    """Step time -> frame time, the inverse of apply_delay; codebooks 1.. of the last `delay`
    frames are not in `delayed` yet and come back as `fill`."""
    if delay == 0 or delayed.shape[-1] == 0:
        return delayed.clone()
    out = torch.full_like(delayed, fill)
    out[:, 0] = delayed[:, 0]
    out[:, 1:, :-delay] = delayed[:, 1:, delay:]
    return out


def _shift_right(x, first):
    """The token each step reads: the previous step's, `first` at step 0. x [..., T]."""
    return torch.cat([torch.full_like(x[..., :1], first), x[..., :-1]], dim=-1)


# --- the model -----------------------------------------------------------------------------------

class S2SModel(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        s = cfg.s2s
        if s.text_vocab_size <= 0:
            raise ValueError("s2s.text_vocab_size is not set: use the tokenizer's vocab_size "
                             "(telugu_tokenizer.Tokenizer.load().vocab_size)")
        if s.user_input not in ("mel", "latent", "codes", "ear"):
            raise ValueError(f"s2s.user_input must be mel, latent, codes or ear, got {s.user_input!r}")
        if s.user_input == "ear" and s.ear_dim <= 0:
            raise ValueError("s2s.user_input=ear needs s2s.ear_dim: the ear's d_model (asr.d_model)")
        if not 1 <= s.n_codebooks <= cfg.codec.n_codebooks:
            raise ValueError(f"s2s.n_codebooks {s.n_codebooks} must be 1..codec.n_codebooks ({cfg.codec.n_codebooks})")
        self.config = cfg
        self.cfg = s
        self.n_codebooks = K = s.n_codebooks
        self.card = card = cfg.codec.codebook_size
        self.text_vocab = V = s.text_vocab_size
        self.frame_size = cfg.codec.frame_size
        self.delay = s.acoustic_delay
        self.empty_code = card  # the extra row of every agent-code table: "no code here (yet)"
        self.text_start = V  # the extra row of the text tables: what step 0 reads
        d, dd = s.d_model, s.depth_d_model

        # Inputs, summed per frame. Codebook tables are stacked into one table with per-codebook
        # offsets, so a frame's K lookups are one gather.
        if s.user_input == "mel":
            self.log_mel = LogMel(cfg.codec.sample_rate, self.frame_size)
            self.user_in = Linear(self.log_mel.dim, d)
        elif s.user_input == "latent":
            self.user_in = Linear(cfg.codec.latent_dim, d)
        elif s.user_input == "ear":
            self.user_in = Linear(s.ear_dim, d)
        else:
            self.user_code_emb = nn.Embedding(K * card, d)
            self.register_buffer("user_code_offsets", torch.arange(K) * card, persistent=False)
        if s.user_input != "codes":  # features of any scale start at the scale of one embedding
            self.user_norm = RMSNorm(d, init=d ** -0.5)
        self.agent_code_emb = nn.Embedding(K * (card + 1), d)
        self.register_buffer("agent_code_offsets", torch.arange(K) * (card + 1), persistent=False)
        self.agent_text_emb = nn.Embedding(V + 1, d)
        self.user_text_emb = nn.Embedding(V + 1, d)
        self.voice_in = Linear(cfg.speaker.embed_dim, d, bias=False)  # zeros -> no bias
        self.clock_in = Linear(CLOCK_DIM, d, bias=False) if s.clock else None

        self.temporal = Transformer(d, s.n_layers, s.n_heads, s.dropout, window=s.context_frames)
        self.user_text_head = Linear(d, V, bias=False)
        self.agent_text_head = Linear(d, V, bias=False)

        # Depth transformer: per-step input projection, token embedding and output head (cheap),
        # shared layers (per-step layers would multiply its weights by K for the same FLOPs).
        self.depth_in = Linear(d, K * dd, bias=False)
        self.depth_text_emb = nn.Embedding(V, dd)
        self.depth_code_emb = nn.Embedding(max(K - 1, 1) * (card + 1), dd)
        self.depth = Transformer(dd, s.depth_layers, s.depth_heads, s.dropout)
        self.code_heads = nn.Parameter(torch.empty(K, card, dd))

        self.apply(self._init_weights)
        nn.init.trunc_normal_(self.code_heads, std=dd ** -0.5, a=-3 * dd ** -0.5, b=3 * dd ** -0.5)
        if self.clock_in is not None:  # starts as no bias at all, as the old weights it may join had
            nn.init.zeros_(self.clock_in.weight)

    @staticmethod
    def _init_weights(m):
        # Moshi's init (std 1/sqrt(fan_in), embeddings 1/sqrt(dim)); residual outputs scaled by
        # 1/sqrt(2 * n_layers) as in GPT-2/nanoGPT.
        if isinstance(m, nn.Linear):
            std = m.in_features ** -0.5 / math.sqrt(2 * getattr(m, "residual_layers", 0.5))
            nn.init.trunc_normal_(m.weight, std=std, a=-3 * std, b=3 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            std = m.embedding_dim ** -0.5
            nn.init.trunc_normal_(m.weight, std=std, a=-3 * std, b=3 * std)

    # --- helpers shared by training and streaming ------------------------------------------------
    def apply_delay(self, codes):
        return apply_delay(codes, self.delay, self.empty_code)

    def undo_delay(self, delayed):
        return undo_delay(delayed, self.delay, self.empty_code)

    def num_params(self) -> dict:
        count = lambda mod: sum(p.numel() for p in mod.parameters())
        depth = count(self.depth) + self.code_heads.numel() + count(self.depth_in) + \
            count(self.depth_text_emb) + count(self.depth_code_emb)
        temporal = count(self.temporal)
        total = count(self)
        return {"temporal": temporal, "depth": depth, "embeddings_heads": total - temporal - depth, "total": total}

    def voice_bias(self, voice, batch: int, device):
        if voice is None:
            return torch.zeros(batch, 1, self.cfg.d_model, device=device)
        voice = torch.as_tensor(voice, dtype=torch.float32, device=device).reshape(-1, self.voice_in.in_features)
        return self.voice_in(voice).expand(batch, -1)[:, None]

    def clock_bias(self, clock, batch: int, device):
        """clock_features [CLOCK_DIM] or [B, CLOCK_DIM] -> [B, 1, d]; zeros without cfg.clock or a clock."""
        if self.clock_in is None or clock is None:
            return torch.zeros(batch, 1, self.cfg.d_model, device=device)
        clock = torch.as_tensor(clock, dtype=torch.float32, device=device).reshape(-1, CLOCK_DIM)
        return self.clock_in(clock).expand(batch, -1)[:, None]

    def _user_from_features(self, x):  # mel / latent / ear features [B, T, F] -> [B, T, d]
        return self.user_norm(self.user_in(x))

    def embed_user(self, user, T: int):
        """The batch's user stream -> [B, T, d_model] (see the module docstring for the shapes)."""
        kind = self.cfg.user_input
        if kind == "mel":
            pcm = user.reshape(user.shape[0], -1).float()
            if pcm.shape[-1] != T * self.frame_size:
                raise ValueError(f"user pcm has {pcm.shape[-1]} samples, expected {T} x {self.frame_size}")
            return self._user_from_features(self.log_mel(pcm))
        if kind in ("latent", "ear"):
            if user.shape[-1] != T:
                raise ValueError(f"user {kind} features have {user.shape[-1]} frames, expected {T}")
            return self._user_from_features(user.transpose(1, 2).float())
        codes = user[:, :self.n_codebooks].long()
        return self.user_code_emb(codes + self.user_code_offsets[:, None]).sum(dim=1)

    def embed_previous(self, agent_text, delayed_codes, user_text):
        """The tokens a step reads: [B, T] text ids and [B, K, T] step-time codes -> [B, T, d]."""
        codes = self.agent_code_emb(delayed_codes + self.agent_code_offsets[:, None]).sum(dim=1)
        return codes + self.agent_text_emb(agent_text) + self.user_text_emb(user_text)

    def depth_input_tokens(self, agent_text, delayed_codes):
        """The token each depth step reads: agent text for step 0, step-time codebook k-1 for
        step k. agent_text [...], delayed_codes [..., K] -> [..., K, depth_d_model]."""
        first = self.depth_text_emb(agent_text)[..., None, :]
        if self.n_codebooks == 1:
            return first
        offsets = self.agent_code_offsets[:-1]
        rest = self.depth_code_emb(delayed_codes[..., :-1] + offsets)
        return torch.cat([first, rest], dim=-2)

    # --- training ---------------------------------------------------------------------------------
    def forward(self, batch: dict, start_frame: int = 0, depth: bool = True,
                depth_index: torch.Tensor | None = None) -> dict:
        """Teacher forcing over whole sequences; logits in step time (module docstring).
        `start_frame` is the absolute position of the first frame (RoPE is relative, so this only
        matters for comparing against a conversation that has run for a while). depth=False
        skips the depth transformer (no agent_codes logits): transcription-only training.
        depth_index (long [N], flat indices into the B*T frames) runs the depth transformer on
        those frames only and returns agent_codes as [N, K, card] (see `loss`, depth_fraction)."""
        K = self.n_codebooks
        agent_codes = batch["agent_codes"][:, :K].long()
        agent_text, user_text = batch["agent_text"].long(), batch["user_text"].long()
        B, _, T = agent_codes.shape
        delayed = self.apply_delay(agent_codes)

        x = self.embed_user(batch["user"], T)
        read_user_text = _shift_right(user_text, self.text_start)
        if self.training and self.cfg.user_text_noise > 0:
            # At inference the model reads back its own transcript, which errs on unseen voices and
            # phrasings; teacher forcing alone would teach it to trust that transcript blindly.
            noisy = torch.rand(read_user_text.shape, device=x.device) < self.cfg.user_text_noise
            random_ids = torch.randint(0, self.cfg.text_vocab_size, read_user_text.shape, device=x.device)
            read_user_text = torch.where(noisy, random_ids, read_user_text)
        x = x + self.embed_previous(_shift_right(agent_text, self.text_start),
                                    _shift_right(delayed, self.empty_code), read_user_text)
        x = x + self.voice_bias(batch.get("voice"), B, x.device) + self.clock_bias(batch.get("clock"), B, x.device)
        h = self.temporal(x, start_frame)
        out = {"user_text": self.user_text_head(h), "agent_text": self.agent_text_head(h)}
        if not depth:
            return out

        dd = self.cfg.depth_d_model
        h, text, codes = h.reshape(B * T, -1), agent_text.reshape(B * T), delayed.transpose(1, 2).reshape(B * T, K)
        if depth_index is not None:
            h, text, codes = h[depth_index], text[depth_index], codes[depth_index]
        depth_x = self.depth_in(h).view(-1, K, dd) + self.depth_input_tokens(text, codes)
        code_logits = torch.einsum("nkd,kcd->nkc", self.depth(depth_x), self.code_heads)
        out["agent_codes"] = code_logits if depth_index is not None else \
            code_logits.view(B, T, K, self.card).permute(0, 2, 1, 3)
        return out

    def loss(self, batch: dict, weights: dict | None = None, pad_id: int = PAD_ID,
             pad_weight: float = PAD_LOSS_WEIGHT, depth_fraction: float = 1.0):
        """(total, per-stream losses). Streams: agent_text, user_text, codebook_0 .. codebook_{K-1}.
        Default weights from cfg: agent_text = text_weight, user_text = user_text_weight,
        codebook_0 = first_codebook_weight, each other codebook 1. `weights` overrides any of them
        (key "codebooks" sets all of 1..K-1 at once), e.g. {"agent_text": 0, "codebook_0": 0,
        "codebooks": 0} for transcription-only training. total = sum(w * loss) / sum(w).
        Text frames whose target is PAD count `pad_weight` (Moshi: padding fills most frames and
        would otherwise swamp the words); masked frames and the empty steps of delayed codebooks
        count zero. With every codebook weight zero the depth transformer is skipped and the
        codebook losses are not computed (a cheaper transcription stage).
        depth_fraction < 1 trains the depth transformer on that share of the batch's frames,
        drawn at random (Sesame CSM's compute amortisation: the depth pass is most of a step's
        cost, while the temporal transformer and both text streams still see every frame).
        batch["text_only"] ([B] bool, optional) marks rows whose only loss is the agent's text."""
        w = {"agent_text": self.cfg.text_weight, "user_text": self.cfg.user_text_weight,
             "codebook_0": self.cfg.first_codebook_weight, "codebooks": 1.0}
        w.update(weights or {})
        K = self.n_codebooks
        code_weights = [w["codebook_0"]] + [w.get(f"codebook_{k}", w["codebooks"]) for k in range(1, K)]
        agent_codes = batch["agent_codes"][:, :K].long()
        B, _, T = agent_codes.shape
        mask = batch.get("mask")
        mask = torch.ones(B, T, dtype=torch.bool, device=agent_codes.device) if mask is None else mask.bool()
        if not 0 < depth_fraction <= 1:
            raise ValueError(f"depth_fraction must be in (0, 1], got {depth_fraction}")
        # Text-only rows (s2s_batching.TextDialogues) teach the agent's text alone: no user transcript
        # (their user is silent) and no codes (silence under speech-time text would teach muteness).
        text_only = batch.get("text_only")
        audio = mask if text_only is None else mask & ~text_only.bool()[:, None]
        depth_index, depth = None, any(code_weights) and bool(audio.any())
        if depth and (depth_fraction < 1 or text_only is not None):
            rows = torch.arange(B * T, device=agent_codes.device)
            if text_only is not None:
                rows = rows.view(B, T)[~text_only.bool()].flatten()
            n = max(1, round(depth_fraction * len(rows)))
            depth_index = rows[torch.randperm(len(rows), device=agent_codes.device)[:n]]
        logits = self(batch, depth=depth, depth_index=depth_index)

        def text_loss(lg, target, m):
            ce = F.cross_entropy(lg.flatten(0, 1), target.flatten().long(), reduction="none").view(B, T)
            wt = m.float() * torch.where(target == pad_id, pad_weight, 1.0)
            return (ce * wt).sum() / wt.sum().clamp(min=1e-8)

        losses = {"agent_text": text_loss(logits["agent_text"], batch["agent_text"], mask),
                  "user_text": text_loss(logits["user_text"], batch["user_text"], audio)}
        if "agent_codes" in logits:
            targets = self.apply_delay(agent_codes)
            valid = apply_delay(audio[:, None].expand(B, K, T), self.delay, False) & (targets != self.empty_code)
            # Per frame: [B, K, T] -> [B*T, K], then the frames the depth pass ran on.
            targets, valid = (x.transpose(1, 2).reshape(B * T, K) for x in (targets, valid))
            code_logits = logits["agent_codes"]
            if depth_index is None:
                code_logits = code_logits.permute(0, 2, 1, 3).reshape(B * T, K, self.card)
            else:
                targets, valid = targets[depth_index], valid[depth_index]
            ce = F.cross_entropy(code_logits.flatten(0, 1), targets.clamp(max=self.card - 1).flatten(),
                                 reduction="none").view(-1, K)
            for k in range(K):
                vk = valid[:, k].float()
                losses[f"codebook_{k}"] = (ce[:, k] * vk).sum() / vk.sum().clamp(min=1e-8)

        stream_weights = {"agent_text": w["agent_text"], "user_text": w["user_text"],
                          **{f"codebook_{k}": code_weights[k] for k in range(K)}}
        total, norm = 0.0, 0.0
        for name, value in losses.items():
            if stream_weights[name]:
                total, norm = total + stream_weights[name] * value, norm + stream_weights[name]
        if norm == 0:
            raise ValueError("every loss weight is zero")
        return total / norm, {k: v.detach() for k, v in losses.items()}

    # --- streaming --------------------------------------------------------------------------------
    def streaming(self, voice=None, temperature: float | None = None, top_k: int | None = None,
                  seed: int | None = None, codec=None, tokenizer=None,
                  text_temperature: float | None = None, text_top_k: int | None = None,
                  now=None, ear=None) -> "StreamingGenerator":
        """A fresh conversation. voice: speaker embedding [voice_dim] (None: no voice bias).
        codec: needed for silence() and to accept raw pcm frames when user_input is latent/codes.
        tokenizer: for the text pieces (default: the one load() found beside the checkpoint).
        Sampling: the agent's codes use temperature/top_k, its text text_temperature/text_top_k;
        each defaults to the config, and a temperature/top_k given without its text_ twin sets
        both streams (so temperature=0 is fully greedy). now: the date and time the agent is told
        (a datetime or its ISO string; gen.set_now() moves it on; None: unknown). ear: the frozen
        recogniser (telugu_asr.Ear) that turns pcm frames into the user stream when user_input is ear."""
        s = self.cfg
        text_temperature = text_temperature if text_temperature is not None else \
            temperature if temperature is not None else s.text_temperature
        text_top_k = text_top_k if text_top_k is not None else top_k if top_k is not None else s.text_top_k
        return StreamingGenerator(
            self, voice, s.temperature if temperature is None else temperature,
            s.top_k if top_k is None else top_k, seed, codec,
            tokenizer if tokenizer is not None else getattr(self, "tokenizer", None),
            text_temperature, text_top_k, now, ear)


# --- streaming generation -----------------------------------------------------------------------

SILENCE_SETTLE_S = 4.0


_SILENCE_CODES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # codec -> {K: codes}


@torch.no_grad()
def steady_silence_codes(codec, n_codebooks: int | None = None) -> torch.Tensor:
    """long [K]: the codes the codec gives long silence, which is what the agent channel of every
    training dialogue holds while the agent is quiet. The first second of zeros gives other codes
    (the causal encoder's start-up transient, about 24 frames for the shipped codec); forcing
    those made the agent hear itself in a state that only stage 1's never-speaking items had."""
    known = _SILENCE_CODES.setdefault(codec, {})  # once per codec, not per conversation (4 s of encoding)
    if n_codebooks not in known:
        device = next(codec.parameters()).device
        zeros = torch.zeros(1, 1, int(SILENCE_SETTLE_S * codec.sample_rate) // codec.frame_size * codec.frame_size,
                            device=device)
        known[n_codebooks] = codec.encode(zeros, n_codebooks)[0, :, -1].clone()
    return known[n_codebooks].clone()


@dataclass
class StepOutput:
    step: int  # the step (= user frame) index this output answers
    agent_codes: torch.Tensor | None  # long [K]: agent frame step - acoustic_delay; None before it exists
    agent_text_id: int
    agent_text_piece: str  # the text it adds to the agent's transcript ("" for PAD or no tokenizer)
    user_text_id: int
    user_text_piece: str
    logits: dict = field(default_factory=dict, repr=False)  # user_text [V], agent_text [V], agent_codes [K, card]
    agent_word_prob: float = 0.0  # 1 - P(PAD) of this step's agent text: the model's wish to speak now


def sample(logits, temperature: float, top_k: int, generator: torch.Generator | None) -> int:
    """Temperature + top-k sampling of one id from logits [V]; greedy when temperature == 0."""
    if temperature <= 0:
        return int(logits.argmax())
    if 0 < top_k < logits.shape[-1]:
        values, indices = torch.topk(logits, top_k)
        probs = torch.softmax(values / temperature, dim=-1)
        return int(indices[torch.multinomial(probs, 1, generator=generator)])
    probs = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def sample_text(logits, temperature: float, top_k: int, word_temperature: float, pad_id: int,
                generator: torch.Generator | None, allow_pad: bool = True) -> int:
    """The agent's text token. word_temperature < 0: one draw (`sample`). Else PAD (silence, or
    the gap inside a word's frames) is drawn with its probability at `temperature`, and a word
    otherwise picked among the other tokens at `word_temperature` (config.S2SConfig says why).
    allow_pad=False: a word, whatever PAD's probability (the context manager's endpointing)."""
    if not allow_pad:
        logits = logits.clone()
        logits[pad_id] = float("-inf")
    if word_temperature < 0 or temperature <= 0:
        return sample(logits, temperature, top_k, generator)
    p_pad = torch.softmax(logits / temperature, dim=-1)[pad_id]
    if torch.rand((), generator=generator, device=logits.device) < p_pad:
        return pad_id
    words = logits.clone()
    words[pad_id] = float("-inf")
    return sample(words, word_temperature, top_k, generator)


def sample_rows(logits, rows: list[int], settings: list[tuple[float, int]], generators: list) -> list[int]:
    """One id for each of `rows` of logits [B, V], row b drawn with its own (temperature, top_k)
    and generator exactly as `sample` draws it alone; rows that share settings share one top-k
    and one softmax. Returns the ids in the order of `rows`."""
    ids = {}
    groups: dict[tuple[float, int], list[int]] = {}
    for b in rows:
        groups.setdefault(settings[b], []).append(b)
    for (temperature, top_k), group in groups.items():
        part = logits if len(group) == logits.shape[0] else logits[group]
        if temperature <= 0:
            ids.update(zip(group, part.argmax(-1).tolist()))
            continue
        if 0 < top_k < logits.shape[-1]:
            values, indices = torch.topk(part, top_k)
            probs = torch.softmax(values / temperature, dim=-1)
            for j, b in enumerate(group):
                ids[b] = int(indices[j, torch.multinomial(probs[j], 1, generator=generators[b])])
        else:
            probs = torch.softmax(part / temperature, dim=-1)
            for j, b in enumerate(group):
                ids[b] = int(torch.multinomial(probs[j], 1, generator=generators[b]))
    return [ids[b] for b in rows]


def rows_of(state: dict, index, all_rows: bool) -> dict:
    """A dict of batch-first tensors -> the same for `index` (all rows: the tensors themselves)."""
    return dict(state) if all_rows else {k: v[index] for k, v in state.items()}


def put_rows(state: dict, index, new: dict, all_rows: bool) -> dict:
    """rows_of's dict, stepped, back into `state` (all rows: it becomes the state)."""
    if all_rows:
        return dict(new)
    for k, v in new.items():
        state[k][index] = v
    return state


class GeneratorBatch:
    """Conversations stepped together, one forward pass per frame for all of them (a worker's frame
    scheduler). Row r of the temporal KV caches, the codec encoder's stream state (the user's side,
    when the model reads latents or codes) and the log-mel history belongs to self.gens[r]; each
    conversation keeps its own position, previous tokens, forcing queues, sampling settings and
    random generator on its StreamingGenerator.

    Conversations join (`add`) and leave (`remove`) between steps; `step` runs any subset of them
    (those with a frame this tick), each at its own RoPE position, with a mask over the ring
    slots a younger conversation has not filled, so no one is padded to the longest. A lone
    StreamingGenerator is a batch of one, stepped through exactly the same code."""

    def __init__(self, model: "S2SModel", codec=None, device=None, ear=None):
        self.model, self.codec, self.ear = model, codec, ear
        self.device = device if device is not None else next(model.parameters()).device
        self.gens: list[StreamingGenerator] = []
        self.caches = model.temporal.new_caches(0, model.cfg.context_frames, self.device)
        # The codec's whole stream state, not only the encoder's: which modules encoding touches is
        # the codec's business.
        self.encoder_state = codec.init_state(0, self.device) if codec is not None else {}
        mel = model.cfg.user_input == "mel"
        self.mel_history = torch.zeros(0, model.log_mel.context, device=self.device) if mel else None
        hears = ear is not None and model.cfg.user_input == "ear"  # the frozen ear turns pcm into the user stream
        self.ear_state = ear.init_state(0, self.device) if hears else None
        self.depth_rope = rope(torch.arange(model.n_codebooks, device=self.device), model.depth.head_dim)
        self._depth_caches: dict[int, list[KVCache]] = {}

    def __len__(self) -> int:
        return len(self.gens)

    # --- rows -------------------------------------------------------------------------------------
    def _fresh_row(self):
        m, dev = self.model, self.device
        enc = self.codec.init_state(1, dev) if self.codec is not None else {}
        mel = torch.zeros(1, m.log_mel.context, device=dev) if self.mel_history is not None else None
        ear = self.ear.init_state(1, dev) if self.ear_state is not None else None
        return None, enc, mel, ear

    def _row(self, r: int):
        kv = [(c.k[r:r + 1], c.v[r:r + 1]) for c in self.caches]
        enc = {k: v[r:r + 1] for k, v in self.encoder_state.items()}
        mel = self.mel_history[r:r + 1] if self.mel_history is not None else None
        ear = self.ear_state.row(r) if self.ear_state is not None else None
        return kv, enc, mel, ear

    @torch.inference_mode()
    def add(self, gen: "StreamingGenerator") -> None:
        """Make `gen` the last row, bringing its caches and stream state from the batch it was in
        (a new generator brings a fresh row)."""
        if gen.model is not self.model or gen.codec is not self.codec or gen.ear is not self.ear:
            raise ValueError("a batch steps one model, one codec and one ear")
        old = gen.batch
        kv, enc, mel, ear = old._row(gen.row) if old is not None else self._fresh_row()
        for i, c in enumerate(self.caches):  # a new row's keys need no zeroing: its position masks them
            k, v = kv[i] if kv is not None else (c.k.new_zeros(1, *c.k.shape[1:]),) * 2
            c.k, c.v = torch.cat([c.k, k]), torch.cat([c.v, v])
        self.encoder_state = {k: torch.cat([v, enc[k]]) for k, v in self.encoder_state.items()}
        if mel is not None:
            self.mel_history = torch.cat([self.mel_history, mel])
        if ear is not None:
            self.ear_state = self.ear_state.join(ear)
        if old is not None:  # only now: leaving moves another row into the one just copied
            old.remove(gen)
        gen.batch, gen.row = self, len(self.gens)
        self.gens.append(gen)

    @torch.inference_mode()
    def remove(self, gen: "StreamingGenerator") -> None:
        """Drop `gen`'s row: the last row moves into its place (one row copied, not the batch)."""
        r, last = gen.row, len(self.gens) - 1
        if self.gens[r] is not gen:
            raise ValueError("not a conversation of this batch")
        if r != last:
            for c in self.caches:
                c.k[r], c.v[r] = c.k[last], c.v[last]
            for v in self.encoder_state.values():
                v[r] = v[last]
            if self.mel_history is not None:
                self.mel_history[r] = self.mel_history[last]
            self.gens[r] = self.gens[last]
            self.gens[r].row = r
        for c in self.caches:
            c.k, c.v = c.k[:last], c.v[:last]
        self.encoder_state = {k: v[:last] for k, v in self.encoder_state.items()}
        if self.mel_history is not None:
            self.mel_history = self.mel_history[:last]
        if self.ear_state is not None:
            self.ear_state = self.ear_state.leave(r)  # moves the last row into r, as above
        self.gens.pop()
        gen.batch, gen.row = None, -1

    @torch.inference_mode()
    def reset_row(self, gen: "StreamingGenerator") -> None:
        """The conversation starts over: fresh stream state (its old keys are masked by position 0)."""
        _, enc, mel, ear = self._fresh_row()
        for k, v in self.encoder_state.items():
            v[gen.row] = enc[k][0]
        if mel is not None:
            self.mel_history[gen.row] = mel[0]
        if ear is not None:
            self.ear_state.reset_row(gen.row)

    # --- one frame for several conversations ------------------------------------------------------
    def _user_embedding(self, gens, frames, index, all_rows: bool):
        m = self.model
        kind, B = m.cfg.user_input, len(frames)
        frames = [torch.as_tensor(f, device=self.device) for f in frames]
        is_pcm = frames[0].is_floating_point() and frames[0].numel() == m.frame_size
        if kind == "mel":
            pcm = torch.stack([f.reshape(-1) for f in frames]).float()
            history = self.mel_history if all_rows else self.mel_history[index]
            feats = m.log_mel(pcm, history)
            new = torch.cat([history, pcm], dim=-1)[:, -m.log_mel.context:]
            if all_rows:
                self.mel_history = new
            else:
                self.mel_history[index] = new
            return m._user_from_features(feats)
        if kind == "ear" and is_pcm:
            if self.ear_state is None:
                raise ValueError("a pcm frame needs the ear for user_input='ear': model.streaming(ear=...)")
            pcm = torch.stack([f.reshape(-1) for f in frames]).float()
            pieces, feats, speech, self.ear_state = self.ear.step(pcm, self.ear_state, rows=None if all_rows else index)
            for g, piece, prob in zip(gens, pieces, speech[:, -1].tolist()):
                g.ear_heard = (piece, prob)
            return m._user_from_features(feats)
        if is_pcm and kind != "ear":
            if self.codec is None:
                raise ValueError(f"a pcm frame needs the codec for user_input={kind!r}: model.streaming(codec=...)")
            state = rows_of(self.encoder_state, index, all_rows)
            pcm = torch.stack([f.reshape(1, -1) for f in frames]).float()
            latent = self.codec.encoder(pcm, state)  # [B, latent, 1]
            self.encoder_state = put_rows(self.encoder_state, index, state, all_rows)
            if kind == "latent":
                return m._user_from_features(latent.transpose(1, 2))
            codes = self.codec.quantizer.encode(latent, m.n_codebooks)[:, :, 0]
        elif kind in ("latent", "ear"):  # features given: the codec's latent, or the ear's (a frame scheduler ran it)
            return m._user_from_features(torch.stack([f.reshape(1, -1) for f in frames]).float())
        else:
            codes = torch.stack([f.reshape(-1)[:m.n_codebooks] for f in frames]).long()
        return m.user_code_emb(codes + m.user_code_offsets).sum(dim=1, keepdim=True)

    def depth_caches(self, batch: int) -> list[KVCache]:
        if batch not in self._depth_caches:
            self._depth_caches[batch] = self.model.depth.new_caches(batch, self.model.n_codebooks, self.device)
        return self._depth_caches[batch]

    @torch.inference_mode()
    def step(self, gens: list["StreamingGenerator"], frames: list) -> list["StepOutput"]:
        """One frame for each of `gens` (members of this batch, each at most once): the user's frame
        as StreamingGenerator.step takes it (all of one kind). Returns their StepOutputs in order."""
        if not gens:
            return []
        order = sorted(range(len(gens)), key=lambda i: gens[i].row)  # the caches' row order
        gens, frames = [gens[i] for i in order], [frames[i] for i in order]
        outs = self._step(gens, frames)
        result = [None] * len(outs)
        for i, out in zip(order, outs):
            result[i] = out
        return result

    def _step(self, gens, frames):
        m = self.model
        positions = [g.step_index for g in gens]
        for g, s in zip(gens, positions):  # a token forced for this step by StreamingGenerator.step's arguments
            if g.forced_agent_text is not None:
                g.forced_text[s] = g.forced_agent_text
            if g.forced_agent_codes is not None:
                g.force_agent_codes(g.forced_agent_codes, s)
        h = self._temporal(gens, frames, positions)  # [B, 1, d]
        user_logits, agent_logits = m.user_text_head(h)[:, 0], m.agent_text_head(h)[:, 0]
        user_ids, text_ids = self._text(gens, positions, user_logits, agent_logits)
        codes, code_logits = self._depth(gens, positions, h, text_ids)
        p_text = torch.softmax(agent_logits.float(), dim=-1)
        outs = []
        for b, (g, s) in enumerate(zip(gens, positions)):
            g.forced_codes.pop(s - m.delay, None)
            g.forced_agent_text = g.forced_agent_codes = g.forced_user_text = None
            # Frame s - delay is complete now: its codebook 0 from `delay` steps ago, the rest from now.
            row = codes[b]
            g.first_codes.append(row[0].clone())
            frame_codes = None
            if s >= m.delay:
                frame_codes = row.clone()
                frame_codes[0] = g.first_codes[0]
            g.prev_agent_text, g.prev_user_text, g.prev_codes = text_ids[b], user_ids[b], row
            g.step_index += 1
            piece = g.tokenizer.piece if g.tokenizer is not None else (lambda i: "")
            outs.append(StepOutput(s, frame_codes, text_ids[b], piece(text_ids[b]), user_ids[b], piece(user_ids[b]),
                                   {"user_text": user_logits[b], "agent_text": agent_logits[b],
                                    "agent_codes": code_logits[b]},
                                   1.0 - float(p_text[b, g.pad_id])))
        return outs

    def _temporal(self, gens, frames, positions):
        """The summed inputs of every row -> the temporal transformer, each row at its position."""
        m, dev, B = self.model, self.device, len(gens)
        rows = [g.row for g in gens]
        all_rows = rows == list(range(len(self.gens)))
        index = torch.tensor(rows, device=dev)
        plan = RowPlan.of(rows, positions, m.cfg.context_frames, all_rows)
        plan.rows, plan.slots = plan.rows.to(dev), plan.slots.to(dev)
        if plan.mask is not None:
            plan.mask = plan.mask.to(dev)
        voices = torch.cat([g.voice for g in gens]) if B > 1 else gens[0].voice
        clocks = torch.cat([g.clock for g in gens]) if B > 1 else gens[0].clock
        x = self._user_embedding(gens, frames, index, all_rows) + voices + clocks
        x = x + m.embed_previous(torch.tensor([[g.prev_agent_text] for g in gens], device=dev),
                                 torch.stack([g.prev_codes for g in gens]).view(B, m.n_codebooks, 1),
                                 torch.tensor([[g.prev_user_text] for g in gens], device=dev))
        cos, sin = rope(torch.tensor(positions, device=dev), m.temporal.head_dim)
        return m.temporal.step(x, cos[:, None, None], sin[:, None, None], self.caches, plan)

    def _text(self, gens, positions, user_logits, agent_logits):
        """The user transcript (greedy) and the agent's text (each row its own sampling and forcing)."""
        user_ids, text_ids = user_logits.argmax(-1).tolist(), []
        for b, (g, s) in enumerate(zip(gens, positions)):
            if g.forced_user_text is not None:
                user_ids[b] = g.forced_user_text
            text_id = g.forced_text.pop(s, None)
            if text_id is None:
                text_id = sample_text(agent_logits[b], g.text_temperature, g.text_top_k,
                                      self.model.cfg.text_word_temperature, g.pad_id, g.rng,
                                      allow_pad=s != g.no_pad_step)
            text_ids.append(text_id)
        return user_ids, text_ids

    def _depth(self, gens, positions, h, text_ids):
        """Codebook 0 of frame s, then codebooks 1.. of frame s - delay, every row at once: codes
        long [B, K] (step time) and their logits [B, K, card]."""
        m, dev, B = self.model, self.device, len(gens)
        K, delay = m.n_codebooks, m.delay
        forced_now = [g.forced_codes.get(s) for g, s in zip(gens, positions)]  # frame s: its codebook 0
        forced_late = [g.forced_codes.get(s - delay) for g, s in zip(gens, positions)]  # frame s - delay
        settings = [(g.temperature, g.top_k) for g in gens]
        rngs = [g.rng for g in gens]
        codes = torch.empty(B, K, dtype=torch.long, device=dev)
        proj = m.depth_in(h).view(B, K, -1)
        caches = self.depth_caches(B)
        for c in caches:
            c.reset()
        token = m.depth_text_emb.weight[torch.tensor(text_ids, device=dev)]
        code_logits = []
        dcos, dsin = self.depth_rope
        for k in range(K):
            y = m.depth.step((proj[:, k] + token).view(B, 1, -1), dcos[k:k + 1], dsin[k:k + 1], caches)
            logits = y[:, 0] @ transposed(m.code_heads)[k] if few_rows(y, m.code_heads) else \
                F.linear(y[:, 0], m.code_heads[k])  # [B, card]
            code_logits.append(logits)
            column, free = [0] * B, []
            for b in range(B):
                if k > 0 and positions[b] < delay:
                    column[b] = m.empty_code  # no frame s - delay yet: training saw the empty token here
                elif k == 0 and forced_now[b] is not None:
                    column[b] = int(forced_now[b][0])
                elif k > 0 and forced_late[b] is not None:
                    column[b] = int(forced_late[b][k])
                else:
                    free.append(b)
            for b, code in zip(free, sample_rows(logits, free, settings, rngs)):
                column[b] = code
            codes[:, k] = torch.tensor(column, device=dev)
            if k + 1 < K:
                token = m.depth_code_emb.weight[k * (m.card + 1) + codes[:, k]]
        return codes, torch.stack(code_logits, dim=1)


class StreamingGenerator:
    """One conversation: its position, the previous step's tokens, the forcing queues, its sampling
    settings and random generator; its KV caches and stream state are a row of the GeneratorBatch
    it belongs to (its own batch of one until a frame scheduler adds it to a shared one). Step once
    per frame with the user's frame: pcm [frame_size] for "mel" (and, given a codec, for "latent"
    and "codes" too), else the codec's latent [latent_dim] or codes [>=K] for that frame.

    The user transcript is always greedy (it is recognition, not generation); the agent's text
    is sampled with text_temperature and text_top_k, its codes with temperature and top_k.

    Forcing (the context manager's hooks, also teacher forcing for tests): force_agent_text(id)
    fixes the agent's text for the next step(s); force_agent_codes(codes, frame) fixes a whole
    agent frame, codebook 0 at its own step and codebooks 1.. `delay` steps later; silence(n) does
    both with PAD and the codec's silence codes for the next n frames. Forced tokens are fed back
    exactly as sampled ones would be, so the model hears itself having gone quiet."""

    def __init__(self, model: S2SModel, voice, temperature: float, top_k: int, seed, codec, tokenizer,
                 text_temperature: float, text_top_k: int, now=None, ear=None):
        self.model = model
        self.temperature, self.top_k = float(temperature), int(top_k)
        self.text_temperature, self.text_top_k = float(text_temperature), int(text_top_k)
        self.codec, self.tokenizer, self.ear = codec, tokenizer, ear
        self.pad_id = tokenizer.pad_id if tokenizer is not None else PAD_ID
        self.device = device = next(model.parameters()).device
        self.rng = torch.Generator(device=device)
        self.seed = seed
        with torch.inference_mode():
            self.voice = model.voice_bias(voice, 1, device)  # [1, 1, d]: added to every frame
        self.set_now(now)
        self.silence_codes = None if codec is None else steady_silence_codes(codec, model.n_codebooks).to(device)
        self.batch: GeneratorBatch | None = None
        self.row = -1
        GeneratorBatch(model, codec, device, ear).add(self)
        self.reset()

    @property
    def caches(self) -> list[KVCache]:
        """The temporal KV caches of this conversation's batch (row self.row is its own)."""
        return self.batch.caches

    def reset(self):
        """Start the conversation over (same voice and settings); buffers are reused."""
        m = self.model
        self.step_index = 0
        self.prev_agent_text = m.text_start
        self.prev_user_text = m.text_start
        self.prev_codes = torch.full((m.n_codebooks,), m.empty_code, dtype=torch.long, device=self.device)
        self.first_codes = deque(maxlen=m.delay + 1)  # codebook 0 of the frames not yet complete
        self.forced_text: dict[int, int] = {}
        self.forced_codes: dict[int, torch.Tensor] = {}
        self.forced_agent_text = self.forced_agent_codes = self.forced_user_text = None  # step()'s arguments
        self.no_pad_step = -1  # prompt_answer(): this step's text may not be PAD
        self.ear_heard = ("", 0.0)  # the ear's text piece and speech probability of the last pcm frame
        if self.batch is not None:
            self.batch.reset_row(self)
        if self.seed is not None:
            self.rng.manual_seed(self.seed)
        else:
            self.rng.seed()

    @torch.inference_mode()
    def set_now(self, now=None):
        """The date and time the agent is told from the next step on (a datetime or its ISO string;
        None: unknown)."""
        self.now = now
        self.clock = self.model.clock_bias(None if now is None else clock_features(now), 1, self.device)

    # --- hooks -------------------------------------------------------------------------------
    def force_agent_text(self, token_id: int, frames: int = 1):
        for s in range(self.step_index, self.step_index + frames):
            self.forced_text[s] = int(token_id)

    def force_agent_codes(self, codes, frame: int | None = None):
        """codes [K] for agent frame `frame` (default: the next step's frame)."""
        frame = self.step_index if frame is None else frame
        self.forced_codes[frame] = torch.as_tensor(codes, dtype=torch.long, device=self.device)[:self.model.n_codebooks]

    def prompt_answer(self):
        """The next step's agent text is a word, not PAD: the user finished and is waiting
        (ContextManager's `prompt_agent`). The model still chooses which word."""
        self.no_pad_step = self.step_index

    def silence(self, frames: int = 1):
        """Make the agent quiet for the next `frames` frames: PAD text and silence codes."""
        if self.silence_codes is None:
            raise RuntimeError("silence() needs the codec: model.streaming(codec=...)")
        self.force_agent_text(self.pad_id, frames)
        for f in range(self.step_index, self.step_index + frames):
            self.force_agent_codes(self.silence_codes, f)

    # --- one frame ---------------------------------------------------------------------------
    def step(self, user_frame, agent_text: int | None = None, agent_codes=None,
             user_text: int | None = None) -> StepOutput:
        """One frame in, one out (this conversation alone, or as a batch's only stepped row).
        agent_text / agent_codes ([K], this step's frame) / user_text force this step's tokens
        (teacher forcing) instead of predicting them."""
        self.forced_agent_text = None if agent_text is None else int(agent_text)
        self.forced_agent_codes = agent_codes
        self.forced_user_text = None if user_text is None else int(user_text)
        return self.batch.step([self], [user_frame])[0]


# --- checkpoints ---------------------------------------------------------------------------------

def load(path=None, device="cpu", tokenizer_path=None) -> S2SModel:
    """The shipped model (no path) or an exported one: safetensors + the JSON Config beside it
    (checkpoint_io.export_safetensors(model.state_dict(), path, model.config)). The tokenizer
    beside it (telugu_spm.model in the same folder, or `tokenizer_path`) is attached as
    model.tokenizer when present, for the generator's text pieces."""
    path = Path(path) if path else SHIPPED
    if not path.exists():
        raise FileNotFoundError(f"S2S checkpoint not found: {path} (train one with train_s2s.py)")
    cfg_path = config_json_path(path)
    if not cfg_path.exists():
        raise FileNotFoundError(f"S2S config not found beside the checkpoint: {cfg_path}")
    cfg = from_dict(json.loads(cfg_path.read_text(encoding="utf-8")))
    model = S2SModel(cfg)
    model.load_state_dict(fill_missing_clock(model, load_safetensors(path)), strict=True)
    model.to(device).eval()
    tok_path = Path(tokenizer_path) if tokenizer_path else path.parent / "telugu_spm.model"
    if tok_path.exists():
        from telugu_tokenizer import Tokenizer
        tok = Tokenizer.load(tok_path)
        if tok.vocab_size == model.text_vocab:
            model.tokenizer = tok
    return model


# --- a whole conversation, frame by frame -------------------------------------------------------------

AGENT_ACTIVE_DB = -45.0  # an agent frame this loud (dBFS) counts as the agent speaking


def frame_db(pcm) -> float:
    return 10 * math.log10(float((pcm.astype("float64") ** 2).mean()) + 1e-10) if len(pcm) else -100.0


@torch.inference_mode()
def converse(model: S2SModel, codec, user_pcm, voice=None, context_cfg=None, temperature: float | None = None,
             top_k: int | None = None, seed: int | None = 0, frame_ms: int | None = None, tokenizer=None,
             text_temperature: float | None = None, text_top_k: int | None = None, user_text_ids=None,
             now=None) -> dict:
    """Play `user_pcm` (24 kHz float32, any length) as the user's side of a conversation, one frame
    at a time, as the server does: the generator steps on the user's frame (running the codec's
    streaming encoder itself when the model reads latents or codes), the codec's streaming decoder
    turns the agent's codes into audio, and a ContextManager watches both sides and mutes the agent
    on a barge-in (the generator is then forced silent, so the model hears itself stop).

    Returns agent_pcm (same length as the input, padded to whole frames: the agent's side at the
    same moments), the text pieces of both sides with the time (s) at the end of the frame that
    produced them, per-frame levels and mutes, step times (ms), and the ContextManager itself.
    user_text_ids (one token id per frame) forces the user transcript: an oracle that hears
    perfectly, which separates the agent's answering from its hearing in an evaluation. now: the
    date and time the agent is told, held for the whole conversation (as the dialogues were
    written; the server moves its clock on with gen.set_now)."""
    import numpy as np

    from context_manager import ContextManager

    fs, K = model.frame_size, model.n_codebooks
    frame_ms = frame_ms or int(round(1000 * fs / codec.sample_rate))
    n_frames = -(-len(user_pcm) // fs)
    user = np.zeros(n_frames * fs, np.float32)
    user[:len(user_pcm)] = user_pcm
    gen = model.streaming(voice=voice, temperature=temperature, top_k=top_k, seed=seed, codec=codec,
                          tokenizer=tokenizer, text_temperature=text_temperature, text_top_k=text_top_k, now=now)
    cm = ContextManager(context_cfg, frame_ms)
    dec_state = codec.init_state(1, gen.device)
    agent = np.zeros_like(user)
    silent = np.zeros(fs, np.float32)
    pieces = {"user": [], "agent": []}
    user_loud, agent_db, muted, step_ms, total_ms = [], [], [], [], []
    for t in range(n_frames):
        frame = user[t * fs:(t + 1) * fs]
        t0 = time.perf_counter()
        forced = None if user_text_ids is None or t >= len(user_text_ids) else int(user_text_ids[t])
        out = gen.step(torch.from_numpy(frame), user_text=forced)
        t1 = time.perf_counter()
        if out.agent_codes is not None:
            pcm, dec_state = codec.decode_step(out.agent_codes.view(1, K, 1), dec_state)
            agent_frame = pcm[0, 0].float().cpu().numpy()
        else:
            agent_frame = silent
        t2 = time.perf_counter()
        res = cm.update(frame, agent_frame, out.user_text_piece, out.agent_text_piece,
                        {"step_ms": (t1 - t0) * 1000, "frame_ms": (t2 - t0) * 1000}, out.agent_word_prob)
        if res.mute_agent:
            agent_frame = silent
            gen.silence(1)  # the next frame too: PAD text and silence codes, fed back as its own
        elif res.prompt_agent:
            gen.prompt_answer()
        agent[t * fs:(t + 1) * fs] = agent_frame
        t_end = round((t + 1) * frame_ms / 1000, 3)
        if out.user_text_piece:
            pieces["user"].append({"t": t_end, "piece": out.user_text_piece})
        if out.agent_text_piece and not res.mute_agent:
            pieces["agent"].append({"t": t_end, "piece": out.agent_text_piece})
        user_loud.append(bool(cm.user_vad.loud))
        agent_db.append(frame_db(agent_frame))
        muted.append(bool(res.mute_agent))
        step_ms.append((t1 - t0) * 1000)
        total_ms.append((t2 - t0) * 1000)
    return {"agent_pcm": agent, "n_frames": n_frames, "frame_ms": frame_ms, "pieces": pieces,
            "user_text": "".join(p["piece"] for p in pieces["user"]).strip(),
            "agent_text": "".join(p["piece"] for p in pieces["agent"]).strip(),
            "user_loud": user_loud, "agent_db": agent_db, "muted": muted, "step_ms": step_ms,
            "frame_total_ms": total_ms, "context": cm}


def response_gap_ms(user_loud, agent_db, frame_ms: int, threshold_db: float = AGENT_ACTIVE_DB):
    """End of the user's speech to the agent's first audio after it, from per-frame levels: the
    first agent frame above `threshold_db` after the user's last loud frame. None when the user
    never spoke or the agent never answered."""
    loud = [i for i, on in enumerate(user_loud) if on]
    if not loud:
        return None
    onset = next((i for i in range(loud[-1] + 1, len(agent_db)) if agent_db[i] > threshold_db), None)
    return None if onset is None else (onset - loud[-1] - 1) * frame_ms


def warn_codec_mismatch(checkpoint, codec_path) -> bool:
    """train_s2s.py records the hash of the codec a model was trained with (checkpoint_io.codec_hash):
    another codec's codes (and latents) mean something else, and the agent then speaks noise. Warn,
    do not refuse."""
    from safetensors import safe_open

    with safe_open(str(checkpoint), "pt") as f:
        trained = (f.metadata() or {}).get("codec_sha")
    used = codec_hash(codec_path)
    if trained and trained != used:
        print(f"warning: {checkpoint} was trained with codec {trained}, {codec_path} is {used}: "
              "fine-tune it on this codec (train_s2s.py --init)", file=sys.stderr)
        return True
    return False


def respond(args) -> dict:
    """The `respond` command: IN.wav as the user, followed by silence; OUT.wav the agent's side."""
    import numpy as np

    import telugu_codec_fixed
    from audio_io import load_audio, save_wav

    torch.set_num_threads(args.threads)
    model = load(args.checkpoint)
    codec = telugu_codec_fixed.load(args.codec)
    if codec.frame_size != model.frame_size or codec.cfg.codebook_size != model.card:
        raise SystemExit(f"codec {args.codec or telugu_codec_fixed.SHIPPED} does not match the S2S model "
                         f"(frame {codec.frame_size} vs {model.frame_size}, codebook {codec.cfg.codebook_size} vs {model.card})")
    voice, voice_name = None, None
    bank_path = Path(args.voice_bank) if args.voice_bank else ROOT / "checkpoints" / "voice_bank.json"
    if bank_path.exists():
        from speaker_embeddings import VoiceBank
        bank = VoiceBank.load(bank_path)
        voice_name = args.voice or model.config.server.default_voice or bank.names()[0]
        voice = bank.embedding(voice_name)
    elif args.voice:
        raise SystemExit(f"--voice {args.voice}: no voice bank at {bank_path}")
    warn_codec_mismatch(args.checkpoint or SHIPPED, args.codec or telugu_codec_fixed.SHIPPED)
    sr = codec.sample_rate
    user = load_audio(args.input, sr)
    n_in = len(user)
    user = np.concatenate([user, np.zeros(int(round(args.seconds_after * sr)), np.float32)])
    import datetime as dt
    run = converse(model, codec, user, voice, model.config.context, args.temperature, args.top_k, args.seed,
                   now=dt.datetime.now())
    save_wav(args.output, run["agent_pcm"][:len(user)], sr)
    ms = sorted(run["step_ms"])
    cm = run["context"]
    return {"input": str(args.input), "output": str(args.output), "voice": voice_name, "sample_rate": sr,
            "input_s": round(n_in / sr, 3), "output_s": round(len(user) / sr, 3), "frames": run["n_frames"],
            "user_text": run["user_text"], "agent_text": run["agent_text"],
            "user_pieces": run["pieces"]["user"], "agent_pieces": run["pieces"]["agent"],
            "response_gap_ms": response_gap_ms(run["user_loud"], run["agent_db"], run["frame_ms"]),
            "turns": cm.transcript(), "barge_ins": cm.barge_ins,
            "step_ms": {"p50": round(statistics.median(ms), 2), "p95": round(ms[int(0.95 * (len(ms) - 1))], 2)}}


# --- CLI -----------------------------------------------------------------------------------------

def benchmark(cfg: Config, steps: int = 200, warm_frames: int | None = None) -> dict:
    """Step time per frame with random weights and a full KV cache (one thread: the caller sets it)."""
    model = S2SModel(cfg).eval()
    gen = model.streaming(temperature=cfg.s2s.temperature, top_k=cfg.s2s.top_k, seed=0)
    frame = torch.randn(model.frame_size) * 0.1 if cfg.s2s.user_input == "mel" else (
        torch.randn(cfg.codec.latent_dim) if cfg.s2s.user_input == "latent" else torch.zeros(model.n_codebooks, dtype=torch.long))
    # Fill the cache cheaply: the cost of a step depends on how many keys are cached, not on which.
    warm = cfg.s2s.context_frames if warm_frames is None else warm_frames
    with torch.inference_mode():  # the batch's caches are inference tensors
        for c in gen.caches:
            c.k.normal_(), c.v.normal_()
            c.count = warm
    gen.step_index = warm
    for _ in range(10):
        gen.step(frame)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        gen.step(frame)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 2), "p95_ms": round(times[int(0.95 * len(times)) - 1], 2),
            "params": model.num_params(), "cached_frames": gen.caches[0].length}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Telugu full-duplex S2S transformer")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="step time per frame on one thread, random weights, full KV cache")
    b.add_argument("--config", default="tiny")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    b.add_argument("--steps", type=int, default=200)
    b.add_argument("--threads", type=int, default=1)
    r = sub.add_parser("respond", help="play IN.wav as the user, write the agent's side to OUT.wav, print JSON")
    r.add_argument("input", help="the user's side: any audio file, any rate")
    r.add_argument("output", help="the agent's side, 24 kHz WAV, the length of IN + --seconds_after")
    r.add_argument("--voice", help="agent voice name in the voice bank (default: server.default_voice or the first)")
    r.add_argument("--checkpoint", help=f"S2S model .safetensors (default {SHIPPED.relative_to(ROOT)})")
    r.add_argument("--codec", help="codec .safetensors (default: the shipped codec)")
    r.add_argument("--voice_bank", help="voice bank JSON (default checkpoints/voice_bank.json)")
    r.add_argument("--seconds_after", type=float, default=3.0, help="silence after IN, for the answer")
    r.add_argument("--temperature", type=float, help="agent sampling temperature (default: the model's config)")
    r.add_argument("--top_k", type=int)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.cmd == "respond":
        try:
            print(json.dumps(respond(args), ensure_ascii=False, indent=1))
        except (FileNotFoundError, KeyError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    from config import load_config

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    if cfg.s2s.text_vocab_size <= 0:
        cfg.s2s.text_vocab_size = 1000
    print(json.dumps(benchmark(cfg, args.steps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
