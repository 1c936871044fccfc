"""Edit directions (InterFaceGAN ``.pt`` tensors or ``.npy`` arrays), read without torch.

The official directions are ``torch.save``-d tensors: age and smile are [1, 512], pose is [1, 18, 512], and
``pose.pt`` was saved on a CUDA device. A ``.pt`` file in PyTorch's zip format is a pickle (``*/data.pkl``) whose
tensors point at raw little-endian storages (``*/data/<key>``). :func:`load_direction` reads it with an unpickler
that accepts only the few globals a plain tensor needs (the tensor rebuild function and the typed storage classes);
anything else in the pickle is refused, so nothing in a user's file is executed. The storage's device (``cuda:0``)
is ignored: the bytes are the same.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Tuple

import numpy as np

from ..errors import InputError

# torch.<Name>Storage -> numpy dtype (the typed storages torch.save records for each tensor dtype)
_STORAGES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": None,  # no numpy dtype: refused with a message
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.name = name


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    """numpy twin of ``torch._utils._rebuild_tensor_v2``: a strided view of the storage, copied."""
    item = storage.itemsize
    if not size:
        return storage[offset:offset + 1].reshape(()).copy()
    need = offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))
    if need > storage.size:
        raise InputError(f"tensor of shape {list(size)} overruns its {storage.size}-element storage")
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * item for s in stride))
    return np.array(view)


class _TensorUnpickler(pickle.Unpickler):
    """Unpickles a ``torch.save`` pickle into numpy arrays, refusing every global a plain tensor does not need."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self._archive, self._prefix = archive, prefix

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            import collections

            return collections.OrderedDict
        raise InputError(f"refusing to load {module}.{name} from a direction file: only plain tensors are read")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise InputError(f"unexpected persistent id {pid!r} in a direction file")
        _, stype, key, _location, numel = pid[:5]
        dtype = _STORAGES.get(getattr(stype, "name", ""), None)
        if dtype is None:
            raise InputError(f"direction storage type {getattr(stype, 'name', stype)!r} is not supported "
                             "(save it as float32)")
        raw = self._archive.read(f"{self._prefix}data/{key}")
        arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
        if arr.size != int(numel):
            raise InputError(f"storage {key} holds {arr.size} elements, the pickle says {numel}")
        return arr.astype(dtype, copy=False)


def _read_pt(path: Path) -> np.ndarray:
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path} is not a PyTorch zip-format file (legacy torch.save format or not a .pt); "
                         "convert it where torch is present: np.save('d.npy', torch.load('d.pt').cpu().numpy())")
    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise InputError(f"{path}: expected one */data.pkl in the archive, found {len(pkl)}")
        prefix = pkl[0][: -len("data.pkl")]
        try:
            obj = _TensorUnpickler(z.read(pkl[0]), z, prefix).load()
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
            raise InputError(f"{path}: not a readable tensor file ({type(e).__name__}: {e})") from None
    if not isinstance(obj, np.ndarray):
        raise InputError(f"{path} holds a {type(obj).__name__}, expected one tensor")
    return obj


def load_direction(path: os.PathLike) -> np.ndarray:
    """Read an edit direction from ``.pt`` (torch zip format, read without torch) or ``.npy``.

    Args:
        path: the direction file.

    Returns:
        The direction as float32, in its stored shape (e.g. [1, 512] or [1, 18, 512]).

    Raises:
        InputError: missing or unreadable file, not a single numeric tensor, or non-finite values.
    """
    p = Path(os.fsdecode(path))
    if not p.is_file():
        raise InputError(f"direction file {p} does not exist")
    if p.suffix.lower() == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as e:
            raise InputError(f"{p}: not a plain .npy array ({e})") from None
    else:
        arr = _read_pt(p)
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{p}: direction dtype {arr.dtype} is not numeric")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise InputError(f"{p}: direction has non-finite values")
    return arr


def fit_direction(direction: np.ndarray, n_styles: int, name: str = "direction") -> np.ndarray:
    """Broadcast a direction to the latent's [S, 512], or refuse it with the reason.

    Accepted: [512], [1, 512], [S, 512], [1, S, 512] (the official age/smile are [1, 512], pose [1, 18, 512]).

    Raises:
        InputError: the last axis is not 512 (e.g. a StyleGAN1 direction) or the style count differs from the
            model's (e.g. an 18-style direction on a 14-style model).
    """
    d = np.asarray(direction, np.float32)
    shape: Tuple[int, ...] = d.shape
    while d.ndim > 2 and d.shape[0] == 1:
        d = d[0]
    if d.ndim == 1:
        d = d[None]
    if d.ndim != 2 or d.shape[1] != 512:
        raise InputError(f"{name} has shape {list(shape)}; a StyleGAN2 W+ direction is [512], [1, 512] or "
                         f"[1, {n_styles}, 512]")
    if d.shape[0] not in (1, n_styles):
        raise InputError(f"{name} has {d.shape[0]} style rows ({list(shape)}) but the model has {n_styles} styles "
                         f"(a direction for a {d.shape[0]}-style generator does not fit this one)")
    return np.ascontiguousarray(np.broadcast_to(d, (n_styles, 512)))  # [S, 512]
