"""Choosing the torch device from a user's string."""

from __future__ import annotations

import re

import torch

from physid.errors import ConfigError

__all__ = ["DEVICE_CHOICES", "check_device_name", "resolve_device"]

DEVICE_CHOICES = ("auto", "cpu", "cuda")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def check_device_name(spec: str) -> str:
    """``spec`` normalised (``auto``, ``cpu``, ``cuda`` or ``cuda:N``), without asking whether
    the device exists here (a config may name a GPU for another machine).

    Raises:
        ConfigError: not a device name.
    """
    name = spec.strip().lower()
    if not _DEVICE_RE.match(name):
        raise ConfigError(f"{spec!r} is not a device; use auto, cpu, cuda or cuda:N.")
    return name


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
