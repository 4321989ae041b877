"""The agent's tools: what a real agent computes instead of guessing (sums, the clock, its own name,
what it said last). The brain (agent_brain.py) writes a short call in its text stream,

    ఐదు ప్లస్ మూడు సమానం ⟦calc ఐదు + మూడు⟧ ఎనిమిది.
                          └─── the call ───┘ └ the result, written by the tool, not the model

the conversation (context_manager.ContextManager.run_tool, or agent_brain's generator) runs it
here and feeds the result back as text that the agent then speaks. Numbers are Telugu words on
both sides, as everywhere in the domain: the model copies the words it heard into the call, and
the calculator reads them.

    call = Call("calc", ["ఐదు", "+", "మూడు"])      run(call, ToolContext(now, "lakshmi")) -> "ఎనిమిది"
    reply_segments(turn) -> [("text", ...), ("call", Call), ("result", ...), ("text", ...)]

A call that cannot be run (a number the ear garbled, a division that does not come out whole)
raises ToolError; the generator then says UNHEARD_NUMBER instead of a wrong answer.
"""
from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass, field

import dialogue_domain as domain

TOOLS = ("calc", "time", "date", "weekday", "month", "year", "name", "previous")
OPS = ("+", "-", "×", "÷", "max")
UNHEARD_NUMBER = "క్షమించండి, ఆ సంఖ్య నాకు సరిగ్గా వినిపించలేదు. మళ్ళీ చెప్పండి."


class ToolError(ValueError):
    """A call the tool cannot answer (its text says why)."""


@dataclass
class Call:
    tool: str
    args: list[str] = field(default_factory=list)  # Telugu number words and OPS, in order

    def text(self) -> str:
        return "⟦" + " ".join([self.tool, *self.args]) + "⟧"


@dataclass
class ToolContext:
    """What the tools read: the conversation's clock (None: the wall clock when the tool runs, as a
    live server wants), the agent's voice, its last full answer."""
    now: dt.datetime | None = None
    agent_voice: str = "lakshmi"
    previous_answer: str | None = None


# --- numbers as words ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _number_table() -> dict[str, int]:
    """Telugu number words -> value for 0..9999, both the plain and the counting forms (ఒక్క)."""
    table = {}
    for n in range(10000):
        table[domain.count_words(n)] = n
        table[domain.number_words(n)] = n
    table["ఒక"] = 1  # "ఒక గంట": one hour
    return table


def warm_up() -> None:
    _number_table()


def words_to_number(words: str) -> int:
    value = _number_table().get(" ".join(words.replace(",", " ").split()))
    if value is None:
        raise ToolError(f"not a number in Telugu words: {words!r}")
    return value


def _operands(args: list[str]) -> tuple[list[int], list[str]]:
    """['ఇరవై', 'మూడు', '+', 'ఐదు'] -> ([23, 5], ['+'])."""
    numbers, ops, words = [], [], []
    for a in args + ["+"]:  # a trailing operator closes the last number
        if a in OPS:
            if not words:
                raise ToolError(f"an operator without a number before it in {args}")
            numbers.append(words_to_number(" ".join(words)))
            ops.append(a)
            words = []
        else:
            words.append(a)
    return numbers, ops[:-1]


def calculate(args: list[str]) -> int:
    """Left to right over + - × ÷ max: the domain's questions have one operator."""
    numbers, ops = _operands(args)
    value = numbers[0]
    for op, n in zip(ops, numbers[1:]):
        if op == "+":
            value += n
        elif op == "-":
            value -= n
        elif op == "×":
            value *= n
        elif op == "÷":
            if n == 0 or value % n:
                raise ToolError(f"{value} ÷ {n} is not a whole number")
            value //= n
        else:
            value = max(value, n)
    if not 0 <= value < 100000:
        raise ToolError(f"the result {value} has no Telugu words here")
    return value


def _offset(args: list[str]) -> int:
    """[] -> 0, ['+', 'ఐదు'] -> 5, ['-', 'ఒకటి'] -> -1."""
    if not args:
        return 0
    if args[0] not in ("+", "-") or len(args) < 2:
        raise ToolError(f"expected + or - and a number, got {args}")
    n = words_to_number(" ".join(args[1:]))
    return n if args[0] == "+" else -n


# --- running a call ------------------------------------------------------------------------------

def run(call: Call, ctx: ToolContext) -> str:
    """The call's result as Telugu text, exactly as the domain words it (dialogue_domain)."""
    now = ctx.now or dt.datetime.now().replace(second=0, microsecond=0)
    if call.tool == "calc":
        return domain.number_words(calculate(call.args))
    if call.tool == "time":
        t = now + dt.timedelta(hours=_offset(call.args))
        return domain.time_words(t.hour, t.minute)
    if call.tool == "weekday":
        return domain.WEEKDAY_TE[domain.WEEKDAYS[(now.weekday() + _offset(call.args)) % 7]]
    if call.tool == "date":
        return domain.date_words(now.year, now.month, now.day)
    if call.tool == "month":
        return domain.MONTH_TE[now.month]
    if call.tool == "year":
        return domain.number_words(now.year)
    if call.tool == "name":
        return domain.AGENT_NAMES.get(ctx.agent_voice, ctx.agent_voice)
    if call.tool == "previous":
        if not ctx.previous_answer:
            raise ToolError("nothing said yet")
        return ctx.previous_answer
    raise ToolError(f"unknown tool {call.tool!r}; tools: {', '.join(TOOLS)}")


# --- which answers use which tool ----------------------------------------------------------------

def _n(key):
    return lambda s: domain.number_words(s[key])


# intent -> (the reply template's field the tool fills, the call made from the turn's slots)
_ONE = "ఒకటి"
TOOL_INTENTS = {
    "add": ("result", lambda s: Call("calc", [_n("a")(s), "+", _n("b")(s)])),
    "subtract": ("result", lambda s: Call("calc", [_n("a")(s), "-", _n("b")(s)])),
    "multiply": ("result", lambda s: Call("calc", [_n("a")(s), "×", _n("b")(s)])),
    "double": ("result", lambda s: Call("calc", [_n("n")(s), "×", "రెండు"])),
    "half": ("result", lambda s: Call("calc", [_n("n")(s), "÷", "రెండు"])),
    "next_number": ("result", lambda s: Call("calc", [_n("n")(s), "+", _ONE])),
    "previous_number": ("result", lambda s: Call("calc", [_n("n")(s), "-", _ONE])),
    "bigger_number": ("result", lambda s: Call("calc", [_n("a")(s), "max", _n("b")(s)])),
    "square": ("result", lambda s: Call("calc", [_n("n")(s), "×", _n("n")(s)])),
    "ask_time": ("time", lambda s: Call("time")),
    "time_after_hours": ("time", lambda s: Call("time", ["+", _n("n")(s)])),
    "ask_day": ("weekday", lambda s: Call("weekday")),
    "ask_tomorrow": ("weekday", lambda s: Call("weekday", ["+", _ONE])),
    "ask_yesterday": ("weekday", lambda s: Call("weekday", ["-", _ONE])),
    "ask_date": ("date", lambda s: Call("date")),
    "ask_month": ("month", lambda s: Call("month")),
    "ask_year": ("year", lambda s: Call("year")),
    "ask_name": ("agent_name", lambda s: Call("name")),
    "repeat": ("previous", lambda s: Call("previous")),
    "didnt_understand": ("previous", lambda s: Call("previous")),
}
_MARK = "TOOLRESULTHERE"


def reply_segments(intent: str, slots: dict, agent_text: str) -> list[tuple[str, object]]:
    """The agent's reply as it is written with tools: ("text", str), ("call", Call) and
    ("result", str) segments, in order. agent_text is the reply sample_turn chose; its template is
    found again among the intent's replies. Replies without a tool field are one text segment."""
    it = domain.INTENTS[intent]
    if intent not in TOOL_INTENTS:
        return [("text", agent_text)]
    name, make_call = TOOL_INTENTS[intent]
    fields = it.fields(slots)
    for template in it.reply_templates(slots):
        if " ".join(template.format(**fields).split()) != agent_text or "{" + name + "}" not in template:
            continue
        before, after = " ".join(template.format(**{**fields, name: _MARK}).split()).split(_MARK, 1)
        segments = [("text", before.strip()), ("call", make_call(slots)), ("result", fields[name]),
                    ("text", after.strip())]
        return [(kind, value) for kind, value in segments if value != ""]
    return [("text", agent_text)]  # a reply without the field (e.g. "repeat" before any answer)


def spoken(segments) -> str:
    """What the agent says: the text and the results, without the calls."""
    return tidy(" ".join(str(v) for k, v in segments if k != "call"))


def tidy(text: str) -> str:
    """One space between words and none before punctuation (segments are joined with spaces)."""
    return re.sub(r" ([.,!?])", r"\1", " ".join(text.split()))
