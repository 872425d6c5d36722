"""Devices, seeds and determinism."""

from __future__ import annotations

import atexit
import os
import random

import torch

from rnnkit.errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` prefers CUDA, then Apple's MPS, then the CPU; otherwise the device named."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"bad value {name!r} for device (choices: auto, cpu, cuda, mps)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but CUDA is not available")
    mps = getattr(torch.backends, "mps", None)
    if device.type == "mps" and not (mps is not None and mps.is_available()):
        raise ConfigError("device 'mps' was asked for but MPS is not available")
    return device


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python's and torch's generators; optionally forbid nondeterministic kernels."""
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def rank() -> int:
    """This process's rank under torchrun (0 when run alone); only rank 0 writes files."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """How many processes train together under torchrun (1 when run alone)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """This process's index on its own machine (picks its GPU)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed(device: torch.device) -> None:
    """Join the process group torchrun set up: NCCL between GPUs, gloo on CPUs."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    # Left to the interpreter's teardown, the group's threads can outlive their owner and a
    # process that has finished its work aborts ("terminate called without an active exception").
    atexit.register(dist.destroy_process_group)


def gather_rows(t: torch.Tensor) -> list[torch.Tensor]:
    """Every process's ``t`` ``(n_p, ...)``, in rank order; the processes' ``n_p`` may differ
    (the rest of the shape may not). Every process must call it."""
    import torch.distributed as dist

    world = dist.get_world_size()
    sizes = [torch.zeros(1, dtype=torch.long, device=t.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([t.shape[0]], device=t.device))
    most = max(int(n) for n in sizes)
    padded = t.new_zeros((most, *t.shape[1:]))
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return [part[: int(n)] for part, n in zip(parts, sizes, strict=True)]


def broadcast_parameters(model: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every process (what DistributedDataParallel does
    when it wraps a model)."""
    import torch.distributed as dist

    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=0)


def sum_gradients(model: torch.nn.Module) -> None:
    """Add up every process's gradients, in place, so each process holds the sum: dense ones
    by all-reduce, sparse ones by gloo's sparse all-reduce, and a gradient of another kind by
    its own ``all_summed()`` (a row gradient gathers its rows). A parameter without a gradient
    counts as zero. Every process must call it, with gradients of the same kinds."""
    import torch.distributed as dist

    for p in model.parameters():
        if not p.requires_grad:
            continue
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        summed = getattr(type(grad), "all_summed", None)
        if summed is not None:
            p.grad = summed(grad)
            continue
        if grad.is_sparse:
            grad = grad.coalesce()
        dist.all_reduce(grad)
        p.grad = grad
