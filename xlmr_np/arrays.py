"""Array namespaces: the model and the engine run on numpy, or on any array API namespace (CuPy on a GPU).

xlmr_np.model and xlmr_np.engine take their array functions from their inputs, `xp = ops_of(x)`, and call
them by their array API names (`xp.mean(x, axis=-1, keepdims=True)`, `xp.permute_dims(t, (0, 2, 1, 3))`):

- numpy arrays get `Numpy`: numpy's own functions, so numpy runs exactly the calls it always ran, with
  `out=` honoured (the engine works in place in buffers it owns) and no dependency beyond numpy;
- any other array gets `Standard(namespace, device)`: the namespace array-api-compat finds for it
  (array_api_compat.cupy for a CuPy array), where `out=` is ignored and every result is a new array, which
  the engine's code always takes from the return value (`y = xp.add(y, b, out=y)`), never from `out`.

So one definition of each formula serves both: the engine's numpy-only speed machinery (row blocks, buffers,
threads) sits around the formulas, behind `xp.standard`, and another namespace runs the formulas whole.

`to_namespace` moves a params dict onto a namespace's device once; `to_numpy` brings results back.
array-api-compat is needed only for arrays other than numpy's (pip install 'xlmr-np[gpu]').
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ConfigError

COMPAT = "array-api-compat"  # the package that finds an array's namespace


def compat(x) -> Any:
    """array-api-compat, needed for x (an array other than numpy's), or a ConfigError saying so."""
    try:
        import array_api_compat
    except ImportError:
        raise ConfigError(
            f"{type(x).__module__}.{type(x).__name__} arrays need {COMPAT}: pip install {COMPAT} "
            "(or pip install 'xlmr-np[gpu]')"
        ) from None
    return array_api_compat


def device_of(x) -> Any:
    """The device an array lives on (None for numpy)."""
    return None if isinstance(x, np.ndarray) else compat(x).device(x)


class Numpy:
    """numpy's functions under the array API names the model and engine use; `out=` is honoured."""

    standard = False  # numpy's fast path: in place, row blocks, threads
    float32, float64, inf = np.float32, np.float64, np.inf
    # staticmethod: numpy's Python-level functions (np.mean) would otherwise bind to the instance
    add = staticmethod(np.add)
    subtract = staticmethod(np.subtract)
    multiply = staticmethod(np.multiply)
    divide = staticmethod(np.divide)
    maximum = staticmethod(np.maximum)
    minimum = staticmethod(np.minimum)
    matmul = staticmethod(np.matmul)
    where = staticmethod(np.where)
    exp = staticmethod(np.exp)
    abs = staticmethod(np.abs)
    square = staticmethod(np.square)
    sqrt = staticmethod(np.sqrt)
    tanh = staticmethod(np.tanh)
    clip = staticmethod(np.clip)
    mean = staticmethod(np.mean)
    max = staticmethod(np.max)
    sum = staticmethod(np.sum)
    all = staticmethod(np.all)
    reshape = staticmethod(np.reshape)
    concat = staticmethod(np.concatenate)

    @staticmethod
    def permute_dims(x, axes):
        return np.transpose(x, axes)

    @staticmethod
    def astype(x, dtype):
        return x.astype(dtype)

    @staticmethod
    def copy(x):
        return x.copy()

    @staticmethod
    def scalar(value, dtype):
        """value as a scalar of dtype (numpy rounds a Python float to it before the operation either way)."""
        return np.dtype(dtype).type(value)

    @staticmethod
    def numpy_dtype(dtype) -> np.dtype:
        return np.dtype(dtype)

    @staticmethod
    def asarray(host, dtype=None):
        """A host (numpy) array in this namespace: itself."""
        return np.asarray(host, dtype=dtype)

    @staticmethod
    def full(shape, value, dtype):
        return np.full(shape, value, dtype=dtype)

    @staticmethod
    def zeros(shape, dtype):
        return np.zeros(shape, dtype=dtype)

    @staticmethod
    def take_rows(table, ids):
        """Rows of table [V, D] at host ids of any shape -> ids.shape + (D,). (The word embedding table is a
        weights.RowTable, which reads just these rows from the file.)"""
        return table[ids]


NUMPY = Numpy()


class Standard:
    """An array API namespace under the same names as Numpy: `out=` is ignored (every result is a new array),
    Python numbers are made arrays where the standard wants arrays, and host arrays go to `device`."""

    standard = True

    def __init__(self, xp, device=None):
        self.xp, self.device = xp, device
        self.float32, self.float64, self.inf = xp.float32, xp.float64, float("inf")

    def _array(self, value, like):
        """value as an array of like's dtype if it is a Python or numpy number (for functions that take arrays)."""
        if isinstance(value, (int, float, np.generic)):
            return self.xp.asarray(float(value), dtype=like.dtype, device=self.device)
        return value

    def add(self, a, b, out=None):
        return a + b

    def subtract(self, a, b, out=None):
        return a - b

    def multiply(self, a, b, out=None):
        return a * b

    def divide(self, a, b, out=None):
        return a / b

    def maximum(self, a, b, out=None):
        return self.xp.maximum(a, self._array(b, a))

    def minimum(self, a, b, out=None):
        return self.xp.minimum(a, self._array(b, a))

    def matmul(self, a, b, out=None):
        return self.xp.matmul(a, b)

    def where(self, condition, a, b):
        like = a if not isinstance(a, (int, float)) else b
        return self.xp.where(condition, self._array(a, like), self._array(b, like))

    def exp(self, x, out=None):
        return self.xp.exp(x)

    def abs(self, x, out=None):
        return self.xp.abs(x)

    def square(self, x, out=None):
        return self.xp.square(x)

    def sqrt(self, x, out=None):
        return self.xp.sqrt(x)

    def tanh(self, x, out=None):
        return self.xp.tanh(x)

    def clip(self, x, low, high, out=None):
        return self.xp.clip(x, low, high)

    def mean(self, x, axis=None, keepdims=False):
        return self.xp.mean(x, axis=axis, keepdims=keepdims)

    def max(self, x, axis=None, keepdims=False):
        return self.xp.max(x, axis=axis, keepdims=keepdims)

    def sum(self, x, axis=None, keepdims=False):
        return self.xp.sum(x, axis=axis, keepdims=keepdims)

    def all(self, x):
        return self.xp.all(x)

    def reshape(self, x, shape):
        return self.xp.reshape(x, shape)

    def permute_dims(self, x, axes):
        return self.xp.permute_dims(x, axes)

    def concat(self, arrays, axis=0):
        return self.xp.concat(arrays, axis=axis)

    def astype(self, x, dtype):
        return self.xp.astype(x, dtype)

    def copy(self, x):
        return self.xp.asarray(x, copy=True)

    def scalar(self, value, dtype):
        """A Python float: the standard rounds it to the array's dtype in a binary operation."""
        return float(value)

    def numpy_dtype(self, dtype) -> np.dtype:
        for name in ("float32", "float64"):
            if dtype == getattr(self.xp, name):
                return np.dtype(name)
        raise ConfigError(f"the model computes in float32 or float64, not {dtype}")

    def asarray(self, host, dtype=None):
        """A host (numpy) array copied to this namespace's device."""
        return self.xp.asarray(np.asarray(host), dtype=dtype, device=self.device)

    def full(self, shape, value, dtype):
        return self.xp.full(shape, value, dtype=dtype, device=self.device)

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype=dtype, device=self.device)

    def take_rows(self, table, ids):
        """Rows of table [V, D] at host ids of any shape -> ids.shape + (D,)."""
        ids = np.asarray(ids)
        rows = self.xp.take(table, self.asarray(ids.reshape(-1)), axis=0)  # [ids.size, D]
        return self.xp.reshape(rows, ids.shape + tuple(table.shape[1:]))


_standard: dict[tuple, Standard] = {}  # (array type, device) -> its Standard: array_namespace takes microseconds


def ops_of(x) -> Any:
    """The array functions for x's namespace: NUMPY for a numpy array, else Standard."""
    if isinstance(x, np.ndarray):
        return NUMPY
    key = (type(x), device_of(x))
    if key not in _standard:
        _standard[key] = Standard(compat(x).array_namespace(x), key[1])
    return _standard[key]


def params_ops(params: dict) -> Any:
    """The array functions of a params dict's namespace (all its weights are on one: see to_namespace)."""
    return ops_of(params["classifier.out_proj.weight"])


def to_namespace(params: dict, xp, device=None) -> dict:
    """Every weight copied once into namespace xp (on device, if given): the word embedding table whole.

    >>> import array_api_strict
    >>> strict = to_namespace(params, array_api_strict)   # the engine and the model then run on it
    """
    return {key: xp.asarray(np.asarray(value), device=device) for key, value in params.items()}


def to_numpy(x) -> np.ndarray:
    """x as a numpy array on the host (copied from a GPU; numpy arrays and host-side namespaces as they are)."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "get"):  # CuPy: numpy refuses an implicit copy from the GPU
        return x.get()
    return np.asarray(x)
