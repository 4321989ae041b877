"""The S2S model's clock input, an encoding below the model like the tokenizer: the moment the
agent is told, as a float vector of one-hot fields (the batching code and the model both need it).

Seven of the domain's intents ask for the time or the date, which no amount of listening reveals:
the agent is told "now" as a conditioning vector added to every frame, like its voice (DESIGN.md).
One-hot fields, so each hour, minute, weekday, day, month and year gets its own learnt direction,
and the words for it are learnt like any other slot value.
"""
import datetime as dt

import torch

CLOCK_YEARS = (2020, 2040)  # later years saturate at 2039
CLOCK_FIELDS = (("known", 1), ("hour", 24), ("minute", 60), ("weekday", 7), ("day", 31), ("month", 12),
                ("year", CLOCK_YEARS[1] - CLOCK_YEARS[0]))
CLOCK_DIM = sum(n for _, n in CLOCK_FIELDS)


def clock_features(now=None) -> torch.Tensor:
    """A datetime (or its ISO string; None: unknown) -> float [CLOCK_DIM] of one-hot fields."""
    x = torch.zeros(CLOCK_DIM)
    if now is None:
        return x
    now = dt.datetime.fromisoformat(now) if isinstance(now, str) else now
    year = min(max(now.year, CLOCK_YEARS[0]), CLOCK_YEARS[1] - 1) - CLOCK_YEARS[0]
    offset = 0
    for (_, n), value in zip(CLOCK_FIELDS, (0, now.hour, now.minute, now.weekday(), now.day - 1, now.month - 1, year)):
        x[offset + value] = 1.0
        offset += n
    return x
