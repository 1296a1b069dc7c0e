"""A restricted unpickler for reconstruction pickles: it admits only plain containers
and numpy arrays, so a pickle can neither run code nor name any other class."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from ...errors import AniRenderError


class _LoadedDict(dict):
    """Stands in for addict.Dict and other dict subclasses while unpickling."""

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.update(state)


def _allowed_pickle_globals():
    from numpy.core import multiarray

    table = {
        ("builtins", "dict"): dict,
        ("builtins", "list"): list,
        ("builtins", "tuple"): tuple,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "bytearray"): bytearray,
        ("builtins", "complex"): complex,
        ("collections", "OrderedDict"): _LoadedDict,
        ("addict.addict", "Dict"): _LoadedDict,
        ("addict", "Dict"): _LoadedDict,
        ("easydict", "EasyDict"): _LoadedDict,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = multiarray._reconstruct
        table[(module, "scalar")] = multiarray.scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        table[(module, "_frombuffer")] = _frombuffer
    return table


def _latin1_encode(text, encoding="latin1"):
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refused codec {encoding!r}")
    return text.encode("latin1")


def _frombuffer(buf, dtype, shape, order):
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy()


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        allowed = _allowed_pickle_globals().get((module, name))
        if allowed is None:
            raise _RefusedGlobal(f"{module}.{name}")
        return allowed

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not plain data")


class _RefusedGlobal(pickle.UnpicklingError):
    pass


def _to_plain(value):
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_plain(v) for v in value)
    return value


def load_pickle_safely(path: Path):
    """Unpickle containers and numpy arrays only; anything that names code is refused."""
    data = Path(path).read_bytes()
    try:
        return _to_plain(_PlainDataUnpickler(io.BytesIO(data)).load())
    except _RefusedGlobal as exc:
        raise AniRenderError(
            f"{Path(path).name}: refused to read this pickle because it asks to run code "
            f"({exc}). A PAniC-3D front.pkl holds only arrays; re-export it, or do not "
            "open pickles from sources you do not trust."
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
