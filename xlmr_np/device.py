"""Where scores are computed: "cpu" (numpy, the default) or "cuda" (CuPy on an NVIDIA GPU).

The weights go to the device once (xlmr_np.arrays.to_namespace); the tokenizer and the checks of a batch
stay on the CPU; xlmr_np.engine runs where the weights are. On "cuda" the products are cuBLAS's, in the
weights' dtype: float32 products in float32 arithmetic, not TF32 (which rounds their inputs to 10 bits of
mantissa), unless CuPy's own switch CUPY_TF32=1 asks for TF32; float64 as on the CPU. docs/gpu.md says
what the GPU's numbers promise and what they do not.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import ConfigError

DEVICES = ("cpu", "cuda")
DEFAULT_DEVICE = "cpu"
GPU_EXTRA = "pip install 'xlmr-np[gpu]'"  # CuPy for CUDA 12 and array-api-compat


def check_device(device) -> str:
    """A device name as given by a user: one of DEVICES."""
    if device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(map(repr, DEVICES))}, got {device!r}")
    return device


def device_namespace(device: str) -> tuple[Any, Any]:
    """(array namespace, device) the weights go to: (numpy, None) for "cpu"; for "cuda" CuPy's array API
    namespace and the current GPU, or a ConfigError naming what is missing (CuPy, a GPU, array-api-compat)."""
    if check_device(device) == "cpu":
        import numpy

        return numpy, None
    try:
        import cupy
    except ImportError as e:
        raise ConfigError(f"device 'cuda' needs CuPy, which is not installed here ({e}): {GPU_EXTRA}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError: no driver, no device; ImportError: a CUDA library missing
        raise ConfigError(f"device 'cuda': CuPy finds no usable GPU ({_first_line(e)})") from None
    if count < 1:
        raise ConfigError("device 'cuda': CuPy finds no GPU")
    try:
        import array_api_compat.cupy as xp
    except ImportError:
        raise ConfigError(f"device 'cuda' needs array-api-compat, which is not installed here: {GPU_EXTRA}") from None
    full_float32_products(cupy)
    return xp, cupy.cuda.Device()


def tf32_asked() -> bool:
    """Whether CUPY_TF32 asks CuPy for TF32 float32 products (read as CuPy reads it: an int above 0)."""
    try:
        return int(os.environ.get("CUPY_TF32", "0") or "0") > 0
    except ValueError:
        return False


def full_float32_products(cupy) -> None:
    """Pin cuBLAS's float32 products to float32 arithmetic (CuPy's COMPUTE_TYPE_DEFAULT, CUBLAS_COMPUTE_32F),
    in case something in this process switched them to TF32, unless CUPY_TF32 asks for TF32.

    CuPy's compute type governs its 2-D products (the dense layers); its batched products (attention)
    always ask cuBLAS for float32 compute, under the default math mode, which does not use TF32.
    """
    if tf32_asked():
        return
    from cupy._core import _routines_linalg

    cupy._core.set_compute_type(cupy.float32, _routines_linalg.COMPUTE_TYPE_DEFAULT)


def tf32_in_force() -> bool | None:
    """Whether CuPy's float32 2-D products use TF32 now (None without CuPy), for reports."""
    try:
        import cupy
        from cupy._core import _routines_linalg
    except ImportError:
        return None
    return cupy._core.get_compute_type(cupy.float32) == _routines_linalg.COMPUTE_TYPE_TF32


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
