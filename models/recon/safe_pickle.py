"""A restricted unpickler for reconstruction pickles: it admits only plain containers
and numpy arrays, so a pickle can neither run code nor name any other class.

Nor can it choose an allocation: every admitted constructor that copies or allocates
(arrays, byte strings, containers) draws from a budget proportional to the file's size
(``BUDGET_FACTOR`` times it, plus ``BUDGET_SLACK``). An honest pickle holds its arrays'
bytes, so it stays far inside; ``bytearray(2**31 - 1)`` or ``ndarray((10**8, 3))`` from
a few dozen bytes, or one large string copied many times over, is refused."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from ...errors import AniRenderError

#: a pickle may make the unpickler allocate at most this many times its own size ...
BUDGET_FACTOR = 4
#: ... plus this many bytes (small pickles of many tiny objects)
BUDGET_SLACK = 16 << 20
_POINTER = 8  # bytes a container spends per item


class _LoadedDict(dict):
    """Stands in for addict.Dict and other dict subclasses while unpickling."""

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.update(state)


class _BudgetSpent(pickle.UnpicklingError):
    pass


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _Budget:
    def __init__(self, limit: int):
        self.limit = limit
        self.left = limit

    def take(self, nbytes: int, what: str) -> None:
        self.left -= int(nbytes)
        if self.left < 0:
            raise _BudgetSpent(what)


class _NdarrayType:
    """What the pickle gets for ``numpy.ndarray``: usable only as ``_reconstruct``'s
    first argument (as numpy's own pickles use it), never called with a shape."""

    def __init__(self, *args, **kwargs):
        raise _BudgetSpent("numpy.ndarray called with a shape of its own")


def _allowed_pickle_globals(budget: _Budget) -> dict:
    from numpy.core import multiarray

    class _CountedArray(np.ndarray):
        """An array under reconstruction: its state's size is drawn from the budget
        before numpy copies it in (``_to_plain`` turns it into a plain ndarray)."""

        def __setstate__(self, state):
            if not isinstance(state, tuple) or len(state) not in (4, 5):
                raise pickle.UnpicklingError("an array state of an unknown form")
            shape, dtype = state[-4], state[-3]
            if not isinstance(dtype, np.dtype) or not isinstance(shape, tuple):
                raise pickle.UnpicklingError("an array state without shape and dtype")
            count = 1
            for dim in shape:
                if type(dim) is not int or dim < 0:
                    raise pickle.UnpicklingError(f"an array shape of {shape!r}")
                count *= dim
            budget.take(count * dtype.itemsize, f"an array of shape {shape} {dtype}")
            super().__setstate__(state)

    def reconstruct(cls, shape, dtype):
        if cls is not _NdarrayType or tuple(shape) != (0,):
            raise _BudgetSpent(f"an array made of {cls!r} with shape {shape!r}")
        return multiarray._reconstruct(_CountedArray, (0,), dtype)

    def scalar(dtype, *data):
        if not isinstance(dtype, np.dtype):
            raise pickle.UnpicklingError("a numpy scalar without a dtype")
        budget.take(dtype.itemsize, f"a numpy scalar of {dtype}")
        return multiarray.scalar(dtype, *data)

    def frombuffer(buf, dtype, shape, order):
        budget.take(len(memoryview(buf).cast("B")), "an array from a buffer")
        return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy()

    def latin1_encode(text, encoding="latin1"):
        if encoding not in ("latin1", "latin-1"):
            raise pickle.UnpicklingError(f"refused codec {encoding!r}")
        if not isinstance(text, str):
            raise pickle.UnpicklingError("_codecs.encode of something other than text")
        budget.take(len(text), "a byte string")
        return text.encode("latin1")

    def make_bytearray(source=b"", *encoding):
        if not isinstance(source, bytes | str):  # bytearray(n) would allocate n bytes
            raise _BudgetSpent(f"bytearray({type(source).__name__})")
        budget.take(len(source), "a bytearray")
        return bytearray(source, *encoding)

    def counted(kind):
        def make(*args):
            value = kind(*args)
            budget.take(len(value) * _POINTER, f"a {kind.__name__} copy")
            return value

        return make

    table = {
        ("builtins", "dict"): counted(dict),
        ("builtins", "list"): counted(list),
        ("builtins", "tuple"): counted(tuple),
        ("builtins", "set"): counted(set),
        ("builtins", "frozenset"): counted(frozenset),
        ("builtins", "bytearray"): make_bytearray,
        ("builtins", "complex"): complex,
        ("collections", "OrderedDict"): _LoadedDict,
        ("addict.addict", "Dict"): _LoadedDict,
        ("addict", "Dict"): _LoadedDict,
        ("easydict", "EasyDict"): _LoadedDict,
        ("numpy", "ndarray"): _NdarrayType,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): latin1_encode,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = reconstruct
        table[(module, "scalar")] = scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        table[(module, "_frombuffer")] = frombuffer
    return table


class _PlainDataUnpickler(pickle.Unpickler):
    def __init__(self, file, budget: _Budget):
        super().__init__(file)
        self._globals = _allowed_pickle_globals(budget)

    def find_class(self, module, name):
        if module == "__builtin__":  # Python 2 pickles (protocol 2)
            module = "builtins"
        allowed = self._globals.get((module, name))
        if allowed is None:
            raise _RefusedGlobal(f"{module}.{name}")
        return allowed

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not plain data")


def _to_plain(value):
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_plain(v) for v in value)
    if isinstance(value, np.ndarray) and type(value) is not np.ndarray:
        return value.view(np.ndarray)
    return value


def load_pickle_safely(path: Path):
    """Unpickle containers and numpy arrays only; anything that names code is refused,
    and so is a pickle that asks for far more memory than its own size."""
    data = Path(path).read_bytes()
    budget = _Budget(BUDGET_FACTOR * len(data) + BUDGET_SLACK)
    try:
        return _to_plain(_PlainDataUnpickler(io.BytesIO(data), budget).load())
    except _RefusedGlobal as exc:
        raise AniRenderError(
            f"{Path(path).name}: refused to read this pickle because it asks to run code "
            f"({exc}). A PAniC-3D front.pkl holds only arrays; re-export it, or do not "
            "open pickles from sources you do not trust."
        ) from None
    except _BudgetSpent as exc:
        raise AniRenderError(
            f"{Path(path).name}: refused to read this pickle: it asks for memory that a "
            f"file of {len(data)} bytes does not hold ({exc}). It is corrupted or crafted; "
            "re-export the reconstruction."
        ) from None
    except MemoryError:
        raise AniRenderError(
            f"{Path(path).name}: the pickle is corrupted (absurd sizes)."
        ) from None
    except Exception as exc:  # noqa: BLE001 - any failure of hostile or broken bytes
        raise AniRenderError(
            f"{Path(path).name}: not a readable pickle (truncated or corrupted: "
            f"{type(exc).__name__}: {exc}). Re-export the reconstruction."
        ) from None
