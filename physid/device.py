"""Choosing the torch device from a user's string."""

from __future__ import annotations

import torch

from physid.errors import ConfigError

__all__ = ["DEVICE_CHOICES", "resolve_device"]

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a :class:`torch.device`.

    ``"auto"`` (or ``None``) picks CUDA when it is available, else the CPU.

    Raises:
        ConfigError: the string names no device physid supports, or CUDA (or device ``N``) was
            asked for and is not available.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    name = "auto" if spec is None else spec.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        index: int | None = None
        if name != "cuda":
            suffix = name.split(":", 1)[1]
            if not suffix.isdigit():
                raise ConfigError(f"device {spec!r} is not valid; use cuda or cuda:N (N >= 0).")
            index = int(suffix)
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {spec!r} was requested but CUDA is not available; use --device cpu."
            )
        count = torch.cuda.device_count()
        if index is not None and index >= count:
            raise ConfigError(f"device {spec!r} does not exist: this machine has {count} GPU(s).")
        return torch.device("cuda", index) if index is not None else torch.device("cuda")
    raise ConfigError(f"unknown device {spec!r}; choose auto, cpu, cuda or cuda:N.")
