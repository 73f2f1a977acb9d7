"""Device and mixed-precision choices shared by the toy-world trainer, the RLVR trainer and the demo.

`device` is "auto" (CUDA when torch sees a GPU, else the CPU), "cpu", "cuda" or "cuda:N". `autocast` is
"auto" (bf16 autocast on CUDA, none on the CPU), "bf16" (also on the CPU: slow, for tests of that path) or
"off". Autocast only wraps forward passes; callers keep their log-softmax, entropy and loss math in fp32.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")
AUTOCAST_CHOICES = ("auto", "bf16", "off")


def device_error(device: str, name: str = "device", check_available: bool = True) -> str | None:
    """Why `device` cannot be used (one line that names the fix), or None if it can. Configs check only the
    spelling (`check_available=False`: a GPU config must stay readable on a laptop); the code that is about to
    compute checks that this machine has the device too."""
    if not isinstance(device, str) or not (device in DEVICE_CHOICES or device.startswith("cuda:")):
        return f"{name}={device!r} is not a device; use auto, cpu, cuda or cuda:N"
    if device.startswith("cuda:") and not device.split(":", 1)[1].isdigit():
        return f"{name}={device!r} is not a device; use auto, cpu, cuda or cuda:N"
    if check_available and device.startswith("cuda"):
        if not torch.cuda.is_available():
            why = "has no CUDA build" if torch.version.cuda is None else "sees no GPU"
            return (
                f"{name}={device!r} but CUDA is not available (torch {torch.__version__} {why}); "
                f"use {name}='cpu' or 'auto'"
            )
        if device.startswith("cuda:") and int(device.split(":", 1)[1]) >= torch.cuda.device_count():
            return f"{name}={device!r}: this machine has cuda:0..cuda:{torch.cuda.device_count() - 1}; pick one"
    return None


def check_device(device: str, name: str = "device", error: type[Exception] = ValueError) -> None:
    """Raise `error` with `device_error`'s line unless this machine can compute on `device`."""
    msg = device_error(device, name)
    if msg:
        raise error(msg)


def autocast_error(autocast: str, name: str = "autocast") -> str | None:
    if autocast not in AUTOCAST_CHOICES:
        return f"{name}={autocast!r}; use auto (bf16 on CUDA, off on the CPU), bf16 or off"
    return None


def resolve_device(device: str) -> str:
    """'auto' → 'cuda' or 'cpu'; other values are returned as given (validate them with `device_error`)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_autocast(autocast: str, device: str) -> torch.dtype | None:
    """The autocast dtype for forward passes on the resolved `device`: bf16 or None (fp32 throughout)."""
    if autocast == "bf16" or (autocast == "auto" and device.startswith("cuda")):
        return torch.bfloat16
    return None


def compute_tag(device: str, dtype: torch.dtype | None) -> str:
    """'cpu-fp32', 'cuda-bf16', ...: what a build or run computed on (device type and autocast dtype)."""
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return f"{kind}-{'bf16' if dtype == torch.bfloat16 else 'fp32'}"


def autocast_context(device: str | torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """`torch.autocast` for forward passes on `device`, or a no-op when `dtype` is None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
