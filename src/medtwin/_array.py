"""One array code path for NumPy arrays and torch tensors (private).

`array_namespace(*arrays)` returns the namespace to compute with: `numpy` itself when no
argument is a torch tensor (so NumPy code runs exactly as written, at NumPy's speed), else a
`TorchNamespace` bound to the first tensor's device, which offers the handful of NumPy names
medtwin's batched filters use, with NumPy's semantics, on torch. Code written against it uses
only those names (see `TorchNamespace`). torch stays optional: it is never imported here; a
tensor can only be passed in once its caller has imported torch, so `sys.modules` says
whether to look.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

#: torch functions whose NumPy namesake has the same semantics for the arguments medtwin uses.
_SAME_AS_NUMPY = (
    "abs", "add", "all", "broadcast_to", "ceil", "concatenate", "exp", "expm1", "full_like",
    "isfinite", "log", "multiply", "nan_to_num", "ones_like", "sqrt", "subtract", "swapaxes",
    "where", "zeros_like",
)


class TorchNamespace:
    """NumPy's names used by medtwin's array code, on torch tensors of one device.

    Creation functions (`asarray`, `array`, `empty`, `zeros`, `eye`) put their result on that
    device and, like NumPy, default to float64; `linalg` is `torch.linalg` (its `cholesky`,
    `eigh`, `solve` and `LinAlgError` match NumPy's for batched square matrices).
    """

    newaxis = None

    def __init__(self, torch: Any, device: Any) -> None:
        self._torch = torch
        self.device = device
        self.float64 = torch.float64
        self.bool_ = torch.bool
        self.linalg = torch.linalg
        for name in _SAME_AS_NUMPY:
            setattr(self, name, getattr(torch, name))

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """`a` as a tensor on this device (no copy where it already is one)."""
        if isinstance(a, np.ndarray) and not a.flags.writeable:
            a = a.copy()  # torch warns on read-only memory (our constants)
        return self._torch.as_tensor(a, dtype=dtype, device=self.device)

    def array(self, a: Any, dtype: Any = None, order: str = "K") -> Any:
        """A copy of `a` on this device (always C-contiguous, whatever `order`)."""
        del order
        return self.asarray(a, dtype).clone(memory_format=self._torch.contiguous_format)

    def empty(self, shape: tuple[int, ...]) -> Any:
        return self._torch.empty(shape, dtype=self._torch.float64, device=self.device)

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return self._torch.zeros(shape, dtype=self._torch.float64, device=self.device)

    def eye(self, n: int) -> Any:
        return self._torch.eye(n, dtype=self._torch.float64, device=self.device)

    def transpose(self, a: Any) -> Any:
        """All axes reversed (NumPy's default `transpose`), a view."""
        return a.permute(*range(a.ndim - 1, -1, -1))

    def diagonal(self, a: Any, axis1: int = 0, axis2: int = 1) -> Any:
        return self._torch.diagonal(a, 0, axis1, axis2)

    def maximum(self, a: Any, b: Any, out: Any = None) -> Any:
        """Elementwise maximum; `b` a tensor or a number (NaN propagates, as in NumPy)."""
        if isinstance(b, self._torch.Tensor):
            return self._torch.maximum(a, b, out=out)
        return self._torch.clamp(a, min=b, out=out)

    def clip(self, a: Any, lo: Any, hi: Any, out: Any = None) -> Any:
        return self._torch.clamp(a, lo, hi, out=out)

    def copyto(self, dst: Any, src: Any) -> None:
        dst.copy_(src)


_TORCH_NAMESPACES: dict[Any, TorchNamespace] = {}


def array_namespace(*arrays: object) -> Any:
    """`numpy`, or the `TorchNamespace` of the first torch tensor's device among `arrays`."""
    torch = sys.modules.get("torch")
    if torch is not None:
        for a in arrays:
            if isinstance(a, torch.Tensor):
                xp = _TORCH_NAMESPACES.get(a.device)
                if xp is None:
                    xp = _TORCH_NAMESPACES[a.device] = TorchNamespace(torch, a.device)
                return xp
    return np
