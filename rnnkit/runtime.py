"""Devices, seeds and determinism."""

from __future__ import annotations

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
