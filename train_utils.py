"""Training hygiene shared by the three train scripts: runtime setup (CPU, CUDA, torchrun DDP),
the LR schedule, a resumable data order, RNG state and --resume. Checkpoint files themselves
(atomic training checkpoints, shipped safetensors) are written and read by checkpoint_io.py, which
the models import without importing any trainer.

The scripts themselves stay one visible loop each (nanoGPT's train.py); this module holds only
what would otherwise be copied three times.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from checkpoint_io import Checkpoints, load_checkpoint
from config import TrainConfig
from data_order import epoch_batches, item_rng, optimizer_steps_per_epoch  # noqa: F401  (the train scripts' tu.*)


# --- runtime --------------------------------------------------------------------------------------

@dataclass
class Runtime:
    device: torch.device
    rank: int
    world_size: int
    local_rank: int
    autocast_dtype: torch.dtype | None  # None: full fp32

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def ddp(self) -> bool:
        return self.world_size > 1

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def setup_runtime(train: TrainConfig) -> Runtime:
    """Device, threads, seed and, under torchrun, the process group (NCCL on GPU, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    want = train.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        raise SystemExit("train.device=cuda but CUDA is not available on this machine")
    device = torch.device(f"cuda:{local_rank}" if want == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if train.threads > 0:
        torch.set_num_threads(train.threads)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    precision = train.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    dtype = torch.bfloat16 if precision == "bf16" else None
    seed_everything(train.seed + rank)
    return Runtime(device, rank, world_size, local_rank, dtype)


def ddp_module(model: torch.nn.Module):
    """The DistributedDataParallel inside `model` (through torch.compile's wrapper), or None."""
    while model is not None and not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = getattr(model, "_orig_mod", None)
    return model


def sync_gradients(model: torch.nn.Module, sync: bool):
    """Gradient accumulation under DDP: averaging gradients across ranks costs a network round, so
    the micro-steps before the last of an optimizer step accumulate locally (DDP's `no_sync`) and
    the last one averages the sum. Forward and backward must both run inside this context."""
    ddp = ddp_module(model)
    return contextlib.nullcontext() if sync or ddp is None else ddp.no_sync()


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """Gradients flow through `module` to its inputs but not into its weights (a critic in the
    generator's pass); its requires_grad flags are restored afterwards."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in params:
            p.requires_grad_(True)


@contextlib.contextmanager
def rehearsal(module: torch.nn.Module, device: torch.device):
    """Passes that leave no trace: the RNG and `module`'s buffers (running statistics, usage
    counters) are put back afterwards, so the real passes that follow draw the same random numbers
    and count the same data as if the rehearsal had never run."""
    buffers = [b.detach().clone() for b in module.buffers()]
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        yield
    with torch.no_grad():
        for b, saved in zip(module.buffers(), buffers):
            b.copy_(saved)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cleanup(rt: Runtime) -> None:
    if rt.ddp and dist.is_initialized():
        # Meet first: a rank that tears gloo down while rank 0 is still exporting can make the other
        # side's gloo thread abort ("terminate called without an active exception").
        dist.barrier()
        dist.destroy_process_group()


def lr_at(step: int, train: TrainConfig, total_steps: int, time_progress: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to lr * lr_min_ratio. A time-boxed run (max_minutes)
    passes the share of its wall-clock budget spent: the decay follows whichever ends first."""
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    progress = min(1.0, max(time_progress, (step - train.warmup_steps) / max(1, total_steps - train.warmup_steps)))
    floor = train.lr * train.lr_min_ratio
    return floor + (train.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class Deadline:
    """train.max_minutes as a wall clock started now (a resumed run gets the budget afresh)."""

    def __init__(self, minutes: float):
        self.seconds, self.start = minutes * 60, time.time()

    def progress(self) -> float:
        return min(1.0, (time.time() - self.start) / self.seconds) if self.seconds > 0 else 0.0

    def passed(self, rt: "Runtime | None" = None) -> bool:
        """Under DDP every rank must stop at the same step: rank 0's clock decides for all."""
        if self.seconds <= 0:
            return False
        late = time.time() - self.start >= self.seconds
        if rt is not None and rt.ddp:
            flag = torch.tensor([float(late)], device=rt.device)
            dist.broadcast(flag, 0)
            late = bool(flag.item())
        return late


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# --- a data order that resumes exactly (data_order.py) ----------------------------------------------

def make_loader(dataset, batches: list[list[int]], train: TrainConfig, rt: Runtime, collate_fn=None):
    """A DataLoader over precomputed batches. It gets its own generator: a DataLoader otherwise draws
    its worker seed from the global RNG, and a resumed run would then drift from an unbroken one."""
    return torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=train.num_workers,
                                       pin_memory=rt.device.type == "cuda", collate_fn=collate_fn,
                                       generator=torch.Generator())


# --- resuming ------------------------------------------------------------------------------------

def rng_state(rt: Runtime | None = None) -> dict:
    """This process's torch RNG. Under DDP every rank draws its own numbers (seeded seed + rank), so
    the state also carries every rank's under "ranks": a collective, call it on all ranks."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if rt is not None and rt.ddp:
        ranks = [None] * rt.world_size
        dist.all_gather_object(ranks, state)
        state = dict(state, ranks=ranks)
    return state


def set_rng_state(state: dict, rank: int = 0) -> None:
    """Restore this rank's RNG (rank 0's when the checkpoint had fewer ranks or none recorded)."""
    ranks = state.get("ranks") or []
    if rank < len(ranks):
        state = ranks[rank]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_resume(resume: str | None, ckpts: Checkpoints):
    """--resume (auto: newest good checkpoint in the run folder) or --resume PATH."""
    if resume is None:
        return None, None
    if resume == "auto":
        state, path = ckpts.load_latest()
        if state is None:
            print(f"--resume: no checkpoint in {ckpts.dir} yet, starting fresh")
        return state, path
    return load_checkpoint(resume), Path(resume)


# --- odds and ends --------------------------------------------------------------------------------

def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def tensorboard(rt: Runtime, out_dir):
    """A SummaryWriter on rank 0, None elsewhere (only one process logs)."""
    if not rt.is_main:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(Path(out_dir) / "tb"))
