"""The agent's brain: what to answer. A small causal language model over the conversation's text
(brain_data.py's stream: the user's words as the ear heard them, the agent's replies with their
tool calls), taught the domain in text first, where a CPU learns it in minutes (PROBES.md §4).

It runs between the ear and the mouth: when the user's turn ends, `Brain.reply` reads the ear's
transcript of it after the conversation so far, writes the answer piece by piece, and whenever it
closes a tool call (CALL tool args CALL_END) the tool runs (agent_tools.run) and its result is fed
back as text before the model writes on. The mouth speaks the answer without the calls.

    brain = agent_brain.load()                          # checkpoints/brain.safetensors
    convo = brain.conversation(now=..., agent_voice="lakshmi")
    answer = brain.reply(convo, "ఐదు ప్లస్ మూడు ఎంత")   # -> Answer(text, calls, ids)

The blocks are the S2S model's (s2s_transformer.Transformer: RoPE, SwiGLU, RMSNorm, KV caches),
so the frame-synchronous model can start from these weights. Each Conversation keeps a KV cache
of what was read and written, so a turn costs only its own pieces.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import agent_tools as tools
from brain_data import BrainVocab
from checkpoint_io import load_safetensors
from config import BrainConfig, Config, config_json_path, from_dict
from s2s_transformer import Transformer, apply_rope, rope
from telugu_tokenizer import BOS_ID, UNK_ID, Tokenizer

ROOT = Path(__file__).resolve().parent
SHIPPED = ROOT / "checkpoints" / "brain.safetensors"


class Brain(nn.Module):
    def __init__(self, cfg: BrainConfig, vocab: BrainVocab):
        super().__init__()
        self.cfg, self.vocab = cfg, vocab
        self.embed = nn.Embedding(vocab.size, cfg.d_model)
        self.transformer = Transformer(cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.dropout, window=cfg.context_tokens)
        self.head = nn.Linear(cfg.d_model, vocab.size, bias=False)
        self.head.weight = self.embed.weight  # tied: a piece means the same read and written
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            std = 0.02 / (2 * getattr(m, "residual_layers", 0.5)) ** 0.5
            nn.init.normal_(m.weight, 0.0, std)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, ids):  # [B, T] -> logits [B, T, V]
        return self.head(self.transformer(self.embed(ids)))

    def loss(self, ids, weights):
        """Next-piece cross-entropy weighted per target (brain_data's weights: the agent's side)."""
        logits = self(ids[:, :-1])
        nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        w = weights[:, 1:]
        return (nll * w).sum() / w.sum().clamp(min=1.0)

    # --- answering ------------------------------------------------------------------------------

    def conversation(self, now: dt.datetime | None = None, agent_voice: str = "lakshmi") -> "Conversation":
        """now: the moment the clock tools read (None: the wall clock at each call)."""
        return Conversation(tools.ToolContext(now, agent_voice))

    def reply(self, convo: "Conversation", heard: str) -> "Answer":
        """The answer to what the ear heard, greedy, tools run on the way. The conversation keeps
        a KV cache of everything read and written so far, so a turn costs its own pieces only."""
        steps = self.reply_steps(convo, heard)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def reply_steps(self, convo: "Conversation", heard: str):
        """reply() one piece at a time: a generator that yields after each piece it writes and
        returns the Answer, so a server can spread an answer over its frames (voice_agent)."""
        v = self.vocab
        answer, call = Answer(), None
        with torch.no_grad():
            logits = self._feed(convo, [v.USER, *v.text(heard), v.AGENT])
        for _ in range(self.cfg.max_answer_tokens):
            yield
            with torch.no_grad():
                logits, call, finished = self._write(convo, answer, logits, call)
            if finished:
                break
        else:
            with torch.no_grad():
                self._feed(convo, [v.END])  # out of room: close the turn so the history stays well formed
        # UNK stands for a character the tokenizer never saw (the answers' "!"): not something to say
        answer.text = tools.tidy(v.tok.decode([i for i in answer.spoken if i != UNK_ID]))
        if answer.text and not any(c.tool == "previous" for c in answer.calls):
            convo.ctx.previous_answer = answer.text
        return answer

    def _write(self, convo, answer, logits, call):
        """One piece of the answer: pick it, run a call it closes, read it back.
        -> (logits after it, the open call's pieces or None, whether the turn ended)."""
        v = self.vocab
        token = int(self._allowed(logits, call).argmax())
        answer.ids.append(token)
        if token == v.END:
            return self._feed(convo, [token]), None, True
        if token == v.CALL:
            return self._feed(convo, [token]), [], False
        if call is not None and token != v.CALL_END:
            return self._feed(convo, [token]), call + [token], False
        if token == v.CALL_END:
            fed = self._run_call(convo, answer, call)
            if fed is None:  # the call could not run: say so rather than guess, and end the turn
                self._feed(convo, [token, *v.text(tools.UNHEARD_NUMBER), v.END])
                answer.spoken = v.text(tools.UNHEARD_NUMBER)
                return None, None, True
            answer.spoken += fed
            return self._feed(convo, [token, *fed]), None, False
        answer.spoken.append(token)
        return self._feed(convo, [token]), None, False

    @torch.no_grad()
    def end_of_turn_prob(self, convo: "Conversation", heard: str) -> float:
        """Do the words heard so far make a whole request? P(AGENT) against P(WAIT) after them,
        read on a copy of the cache (nothing is committed to the conversation)."""
        v = self.vocab
        ids = [v.USER, *v.text(heard)]
        if convo.cache is None or convo.position + len(ids) > self.cfg.context_tokens:
            history = ([BOS_ID] + convo.history[-(self.cfg.context_tokens - len(ids) - 1):]) if convo.history else [BOS_ID]
            logits = self._cached_forward(torch.tensor([history + ids]), [None] * len(self.transformer.blocks), 0)[0]
        else:
            logits = self._cached_forward(torch.tensor([ids]), list(convo.cache), convo.position)[0]
        pair = torch.softmax(logits[[v.AGENT, v.WAIT]], dim=0)
        return float(pair[0])

    @torch.no_grad()
    def remember(self, convo: "Conversation", heard: str, said: str) -> None:
        """A finished turn the brain did not write (a history to resume, a test's context)."""
        v = self.vocab
        self._feed(convo, [v.USER, *v.text(heard), v.AGENT, *v.text(said), v.END])
        convo.ctx.previous_answer = said

    def reply_batch(self, convos: list["Conversation"], heard: list[str]) -> list["Answer"]:
        """Answers for conversations whose turns ended on the same tick (one after another: each
        conversation's cache has its own length, and such ticks are rare)."""
        return [self.reply(c, h) for c, h in zip(convos, heard)]

    def _run_call(self, convo, answer, body) -> list[int] | None:
        """The tool's result as pieces to read next, or None if the call cannot run."""
        try:
            call = self.vocab.parse_call(body)
            result = tools.run(call, convo.ctx)
        except tools.ToolError as e:
            answer.calls.append(tools.Call("error", [str(e)]))
            return None
        answer.calls.append(call)
        return self.vocab.text(result)

    def _feed(self, convo: "Conversation", ids: list[int]):
        """Read pieces into the conversation's cache; the logits after the last one. Past the
        window, the cache is rebuilt from the recent history (whole turns, from BOS at 0)."""
        convo.history += ids
        if convo.cache is None or convo.position + len(ids) > self.cfg.context_tokens:
            keep = convo.history[-(self.cfg.context_tokens - self.cfg.max_answer_tokens - 1):]
            starts = [i for i, t in enumerate(keep) if t == self.vocab.USER]
            keep = keep[starts[0]:] if starts and len(keep) < len(convo.history) else keep
            convo.cache, convo.position, ids = [None] * len(self.transformer.blocks), 0, [BOS_ID] + keep
        logits = self._cached_forward(torch.tensor([ids]), convo.cache, convo.position)
        convo.position += len(ids)
        return logits[0]

    def _cached_forward(self, ids, cache: list, start: int):
        """The transformer over ids [B, T] at positions start.., keys and values appended to
        `cache` (one (k, v) per block); -> logits of the last position [B, V]. The same numbers as
        forward() on the whole sequence (the blocks' own arithmetic, in eval mode)."""
        B, T = ids.shape
        x = self.embed(ids)
        tr = self.transformer
        cos, sin = rope(torch.arange(start, start + T), tr.head_dim)
        mask = None
        if T > 1:  # query i (at start + i) sees keys 0 .. start + i
            mask = torch.arange(start + T)[None, :] <= (start + torch.arange(T))[:, None]
        for layer, block in enumerate(tr.blocks):
            q, k, v = block.attn._heads(block.norm1(x))
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            if cache[layer] is not None:
                k, v = torch.cat([cache[layer][0], k], dim=2), torch.cat([cache[layer][1], v], dim=2)
            cache[layer] = (k, v)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + block.attn.out(y.transpose(1, 2).reshape(B, T, -1))
            x = x + block.mlp(block.norm2(x))
        return self.head(tr.norm(x[:, -1]))

    def _allowed(self, logits, open_call):
        """Inside a call only pieces, operators and CALL_END; outside it no call internals."""
        v = self.vocab
        logits = logits.clone()
        ops = [v.id[f"op:{o}"] for o in tools.OPS]
        names = [v.id[f"tool:{t}"] for t in tools.TOOLS]
        if open_call is None:
            logits[[v.CALL_END, v.USER, v.AGENT, v.WAIT, *ops, *names]] = -float("inf")
        elif not open_call:  # right after CALL: a tool name
            keep = torch.full_like(logits, -float("inf"))
            keep[names] = logits[names]
            logits = keep
        else:
            logits[[v.CALL, v.END, v.USER, v.AGENT, v.WAIT, *names]] = -float("inf")
        logits[BOS_ID] = -float("inf")
        return logits


@dataclass
class Conversation:
    """One conversation as the brain sees it: the tools' context and the pieces so far."""
    ctx: tools.ToolContext
    history: list[int] = field(default_factory=list)  # every piece read or written, BOS excluded
    cache: list | None = None  # per block (keys, values) of the pieces since the last rebuild
    position: int = 0  # pieces in the cache


@dataclass
class Answer:
    text: str = ""
    calls: list[tools.Call] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)  # what the model wrote (calls included)
    spoken: list[int] = field(default_factory=list)  # the pieces the mouth says (results included)


# --- checkpoints --------------------------------------------------------------------------------------

def load(path=None, device="cpu") -> Brain:
    """The brain from safetensors + its JSON config (default: the shipped checkpoint)."""
    path = Path(path) if path else SHIPPED
    cfg_path = config_json_path(path)
    if not path.exists() or not cfg_path.exists():
        raise FileNotFoundError(f"no brain checkpoint at {path} (with {cfg_path.name} beside it); "
                                f"train one with train_brain.py or pass --checkpoint")
    meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg: Config = from_dict(meta)
    tok = Tokenizer.load(ROOT / meta.get("tokenizer", "checkpoints/telugu_spm.model"))
    brain = Brain(cfg.brain, BrainVocab(tok))
    state = {k: v.float() for k, v in load_safetensors(path, device="cpu").items()}
    state.setdefault("head.weight", state["embed.weight"])
    brain.load_state_dict(state)
    tools.warm_up()  # the calculator's table of number words, built now rather than inside a reply
    return brain.to(device).eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="the agent's brain: answer Telugu requests (text in, text out)")
    p.add_argument("requests", nargs="+", help="what the user said, one turn each, in order")
    p.add_argument("--checkpoint", help="default checkpoints/brain.safetensors")
    p.add_argument("--voice", default="lakshmi")
    p.add_argument("--now", help="ISO time the conversation happens at (default: now)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        brain = load(args.checkpoint)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    convo = brain.conversation(dt.datetime.fromisoformat(args.now) if args.now else None, args.voice)
    for text in args.requests:
        a = brain.reply(convo, text)
        print(json.dumps({"user": text, "agent": a.text, "calls": [c.text() for c in a.calls]}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
