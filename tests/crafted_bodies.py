"""Hand-written hostile request bodies and pickles, kept as test data in tests/data/crafted.

Each ``.npz`` there is a body for one array name of the wire format (``images.*``,
``udp.*``, ...); each ``.pkl`` a reconstruction pickle. They are written by this module
(deterministic bytes: fixed zip timestamps), so ``python tests/crafted_bodies.py``
rewrites them and ``tests/test_service_fuzz.py`` checks that the files on disk are what
this module makes. What each one tries is in ``NPZ_KINDS`` and ``PICKLE_KINDS``.
"""

from __future__ import annotations

import io
import struct
import sys
import zipfile
from pathlib import Path

FOLDER = Path(__file__).resolve().parent / "data" / "crafted"
#: the array names of the wire format's POST bodies
NAMES = ("images", "udp", "weights", "portrait", "poses")
BOMB_BYTES = 16 << 20  # what the deflated member unpacks to (the tests' limit is 4 MiB)


def _entry(name: str, compress: bool = False) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    return info


def zip_members(*members, compress: bool = False) -> bytes:
    """A zip of (name, bytes) members with fixed timestamps (same bytes every time)."""
    import warnings

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicate names are the point
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, data in members:
                archive.writestr(_entry(name, compress), data)
    return buffer.getvalue()


def npy(descr, shape, data: bytes = b"", version=(1, 0)) -> bytes:
    """An .npy member with any header, however absurd, then ``data``."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    magic = b"\x93NUMPY" + bytes(version)
    size = struct.pack("<H", len(header)) if version == (1, 0) else struct.pack("<I", len(header))
    return magic + size + header + data


def _valid(name: str) -> bytes:
    """A plausible member for ``name`` (the wire's dtype, small)."""
    if name in ("images", "portrait", "weights"):
        return npy("|u1", (64,), bytes(64))
    return npy("<f4", (16,), bytes(64))


NPZ_KINDS = {
    "deflate_bomb": "a deflated member that unpacks to 16 MiB from 16 KiB",
    "overflow_shape": "an .npy header with shape (10**400,)",
    "negative_shape": "an .npy header with shape (-1, 4)",
    "many_dims": "an .npy header with 40 dimensions",
    "huge_declared": "an .npy header announcing 1.6 TB with 64 bytes of data",
    "object_array": "an object (pickled) array",
    "void_zero": "10**12 items of a zero-byte dtype",
    "structured": "a structured dtype",
    "twins": "the array as NAME and NAME.npy, the second one valid",
    "duplicate_entry": "the same member name twice",
    "truncated_zip": "a valid archive cut in half",
    "not_a_zip": "bytes that are no archive",
    "empty_zip": "an archive without members",
    "bad_magic": "a member that is not .npy",
    "npy_version_3": "an .npy format version 3 header",
    "header_code": "an .npy header that is a Python expression, not a literal",
    "path_escape": "a member named ../NAME.npy",
    "crc_mismatch": "a stored member whose CRC does not match",
    "big_endian": "big-endian floats (>f4)",
}


def crafted_npz(name: str, kind: str) -> bytes:
    valid = _valid(name)
    if kind == "deflate_bomb":
        return zip_members(
            (f"{name}.npy", npy("|u1", (BOMB_BYTES,), bytes(BOMB_BYTES))), compress=True
        )
    if kind == "overflow_shape":
        return zip_members((f"{name}.npy", npy("<f4", (10**400,))))
    if kind == "negative_shape":
        return zip_members((f"{name}.npy", npy("<f4", (-1, 4), bytes(64))))
    if kind == "many_dims":
        return zip_members((f"{name}.npy", npy("|u1", (1,) * 40, bytes(1))))
    if kind == "huge_declared":
        return zip_members((f"{name}.npy", npy("<f4", (10**5, 1000, 1000, 4), bytes(64))))
    if kind == "object_array":
        return zip_members((f"{name}.npy", npy("|O", (1,), b"\x80\x02N.")))
    if kind == "void_zero":
        return zip_members((f"{name}.npy", npy("|V0", (10**12,))))
    if kind == "structured":
        return zip_members((f"{name}.npy", npy([("a", "<f4")], (4,), bytes(16))))
    if kind == "twins":
        return zip_members((name, npy("|u1", (10**9,), bytes(64))), (f"{name}.npy", valid))
    if kind == "duplicate_entry":
        return zip_members((f"{name}.npy", npy("|u1", (10**9,))), (f"{name}.npy", valid))
    if kind == "truncated_zip":
        whole = zip_members((f"{name}.npy", valid))
        return whole[: len(whole) // 2]
    if kind == "not_a_zip":
        return b"PK\x03\x04" + bytes(range(256)) * 4
    if kind == "empty_zip":
        return zip_members()
    if kind == "bad_magic":
        return zip_members((f"{name}.npy", b"\x93NUMPX" + bytes(120)))
    if kind == "npy_version_3":
        return zip_members((f"{name}.npy", npy("|u1", (64,), bytes(64), version=(3, 0))))
    if kind == "header_code":
        header = b"{'descr': __import__('os').getcwd(), 'fortran_order': False, 'shape': (1,)}"
        header += b" " * (-(len(header) + 11) % 64) + b"\n"
        member = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(8)
        return zip_members((f"{name}.npy", member))
    if kind == "path_escape":
        return zip_members((f"../{name}.npy", valid))
    if kind == "crc_mismatch":
        body = bytearray(zip_members((f"{name}.npy", valid)))
        body[len(body) // 3] ^= 0xFF  # inside the member's data: the CRC no longer matches
        return bytes(body)
    if kind == "big_endian":
        return zip_members((f"{name}.npy", npy(">f4", (16,), bytes(64))))
    raise KeyError(kind)


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _int4(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def crafted_pickles() -> dict[str, bytes]:
    """Pickles (protocol 2 opcodes, written by hand) that ask for memory or for code."""
    chunk = 256 << 10
    repeated = b"\x80\x02" + _global("builtins", "bytearray") + b"q\x00"
    repeated += b"B" + struct.pack("<I", chunk) + bytes(chunk) + b"q\x01"
    repeated += b"]q\x02(" + b"h\x00h\x01\x85R" * 512 + b"e."
    return {
        # bytearray(2**31 - 1): 2 GiB of zeros from 30 bytes
        "bytearray_size": b"\x80\x02" + _global("builtins", "bytearray") + _int4(2**31 - 1) + b"\x85R.",
        # numpy.ndarray((10**8, 3)): 2.4 GB, uninitialised (read as NaN vertices before)
        "ndarray_shape": b"\x80\x02" + _global("numpy", "ndarray") + _int4(10**8) + b"K\x03\x86\x85R.",
        # numpy's _reconstruct with a shape of the pickle's choosing
        "reconstruct_shape": b"\x80\x02"
        + _global("numpy.core.multiarray", "_reconstruct")
        + _global("numpy", "ndarray")
        + _int4(10**8)
        + b"K\x03\x86C\x02f8\x87R.",
        # one 256 KiB string copied 512 times through the memo (128 MiB)
        "memo_copies": repeated,
        # a 2 GB array state with no data behind it
        "array_state_lie": b"\x80\x02"
        + _global("numpy.core.multiarray", "_reconstruct")
        + _global("numpy", "ndarray")
        + b"K\x00\x85C\x01b\x87R"
        + b"(K\x01" + _int4(10**8) + b"K\x03\x86" + _global("numpy", "dtype") + b"X\x02\x00\x00\x00f8\x85R"
        + b"\x89C\x00tb.",
        # code: os.system, builtins.eval, a persistent id
        "os_system": b"\x80\x02" + _global("os", "system") + b"X\x04\x00\x00\x00true\x85R.",
        "builtins_eval": b"\x80\x02" + _global("builtins", "eval") + b"X\x01\x00\x00\x001\x85R.",
        "persistent_id": b"\x80\x02X\x01\x00\x00\x00xQ.",
        # 100000 nested lists
        "deep_nesting": b"\x80\x02" + b"]" * 100000 + b"a" * 99999 + b".",
    }  # fmt: skip


def expected_files() -> dict[str, bytes]:
    files = {f"{name}.{kind}.npz": crafted_npz(name, kind) for name in NAMES for kind in NPZ_KINDS}
    files.update({f"{kind}.pkl": data for kind, data in crafted_pickles().items()})
    return files


def write_all(folder: Path = FOLDER) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in expected_files().items():
        (folder / name).write_bytes(data)


if __name__ == "__main__":
    write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else FOLDER)
