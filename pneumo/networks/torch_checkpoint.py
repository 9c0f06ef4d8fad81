"""Read a PyTorch state dict saved in the legacy (pre-1.6, non-zip) format, with the standard library and
NumPy only: no PyTorch install, and no pickle that may run code.

The file is five pickles one after another (magic number, protocol version, system info, the state dict,
the list of storage keys), then each storage's raw little-endian data in that list's order, every one
preceded by its 8-byte element count. A tensor is pickled as `torch._utils._rebuild_tensor_v2(storage,
offset, size, stride, ...)`; its storage is a persistent id ('storage', StorageType, key, location, numel).
Strides are honoured: many of these checkpoints' kernels are not C-contiguous.
"""

from __future__ import annotations

import io
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TrainingOptionError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    name: str


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: type


@dataclass(frozen=True)
class _TensorView:
    storage: _Storage
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return _TensorView(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *unused):
    return data


class _CheckpointUnpickler(pickle.Unpickler):
    """Knows the handful of names a state dict needs and refuses every other global."""

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"a state-dict checkpoint does not hold {module}.{name}")

    def persistent_load(self, pid):
        kind, storage_type, key = pid[0], pid[1], pid[2]
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid[:2]!r}")
        return _Storage(str(key), STORAGE_DTYPES[storage_type.name])


def read_legacy_state_dict(path: str | Path) -> "OrderedDict[str, np.ndarray]":
    """The state dict of a legacy PyTorch checkpoint as NumPy arrays, keyed as in PyTorch."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return _read(handle, path)
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, KeyError) as error:
        raise TrainingOptionError(f"{path}: not a legacy PyTorch state-dict checkpoint ({error})") from None


def _read(handle: io.BufferedReader, path: Path):
    def next_pickle():
        return _CheckpointUnpickler(handle).load()

    if next_pickle() != LEGACY_MAGIC:
        raise ValueError("wrong magic number (a zip checkpoint from PyTorch >= 1.6 is not this format)")
    if next_pickle() != LEGACY_PROTOCOL:
        raise ValueError("unknown protocol version")
    system = next_pickle()
    if not system.get("little_endian", False):
        raise ValueError("big-endian checkpoints are not supported")
    state = next_pickle()
    storage_keys = next_pickle()
    storages = {}
    views = {name: value for name, value in state.items() if isinstance(value, _TensorView)}
    dtypes = {view.storage.key: view.storage.dtype for view in views.values()}
    for key in storage_keys:
        (count,) = struct.unpack("<q", handle.read(8))
        dtype = np.dtype(dtypes.get(key, np.float32)).newbyteorder("<")
        raw = handle.read(count * dtype.itemsize)
        if len(raw) != count * dtype.itemsize:
            raise ValueError(f"storage {key} is truncated")
        storages[key] = np.frombuffer(raw, dtype=dtype)
    arrays = OrderedDict()
    for name, view in views.items():
        flat = storages[view.storage.key]
        itemsize = flat.dtype.itemsize
        array = np.lib.stride_tricks.as_strided(
            flat[view.offset:], shape=view.size, strides=tuple(step * itemsize for step in view.stride))
        arrays[name] = np.array(array, dtype=flat.dtype.newbyteorder("="), order="C")  # a copy, in C order
    return arrays
