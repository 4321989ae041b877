"""A data order that resumes exactly: the batches of an epoch are a permutation fixed by (seed,
epoch), and the randomness of one item (crop offset, augmentation) comes from its coordinates
(seed, epoch, index), not from a stream. A resumed run therefore sees exactly the data an unbroken
one would, whatever the number of loader workers.

Data layer: the train scripts reach these through train_utils (tu.epoch_batches, tu.item_rng), and
the datasets below the trainers (s2s_batching.TextDialogues) import them from here.
"""
from __future__ import annotations

import numpy as np
import torch


def optimizer_steps_per_epoch(n_micro_batches: int, grad_accum: int) -> int:
    """Whole optimizer steps in an epoch of `n_micro_batches`; the remainder (< grad_accum) is
    dropped, so a step never mixes two epochs and a resumed epoch starts on a step boundary."""
    if n_micro_batches < grad_accum:
        raise SystemExit(f"an epoch has {n_micro_batches} batches per rank, fewer than train.grad_accum="
                         f"{grad_accum}: lower grad_accum or batch_size, or use fewer processes")
    return n_micro_batches // grad_accum


def epoch_batches(n_items: int, batch_size: int, epoch: int, seed: int, rank: int = 0,
                  world_size: int = 1) -> list[list[int]]:
    """The batches of one epoch for this rank: a permutation fixed by (seed, epoch), so a resumed run
    can skip the batches it already trained on and see exactly the rest. Every rank gets the same
    number of batches (DDP needs the same step count everywhere)."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    order = torch.randperm(n_items, generator=g).tolist()
    per_rank = n_items // world_size
    mine = order[rank * per_rank:(rank + 1) * per_rank]
    n_batches = len(mine) // batch_size
    if n_batches == 0 and mine:  # a tiny corpus still trains: one short batch
        return [mine]
    return [mine[i * batch_size:(i + 1) * batch_size] for i in range(n_batches)]


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Randomness of one training item (crop offset, augmentation) from its coordinates, not from a
    stream: it is the same after a resume and the same whatever the number of loader workers."""
    return np.random.default_rng([seed, epoch, index])
