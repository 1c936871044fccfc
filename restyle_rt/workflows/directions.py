"""Edit directions (InterFaceGAN ``.pt`` tensors, ``.safetensors`` or ``.npy`` arrays), read without torch.

The official directions are ``torch.save``-d tensors: age and smile are [1, 512], pose is [1, 18, 512], and
``pose.pt`` was saved on a CUDA device. A ``.pt`` file in PyTorch's zip format is a pickle (``*/data.pkl``) whose
tensors point at raw little-endian storages (``*/data/<key>``). :func:`load_direction` reads it with an unpickler
that accepts only the few globals a plain tensor needs (the tensor rebuild function and the typed storage classes);
anything else in the pickle is refused, so nothing in a user's file is executed. The storage's device (``cuda:0``)
is ignored: the bytes are the same. bfloat16 storages are widened to float32 (the top 16 bits of a float32).

A ``.safetensors`` file (8-byte little-endian header length, a JSON header, raw little-endian data) is parsed
directly: it must hold one tensor of dtype F32, F16, BF16 or F64. Every malformed file raises :class:`InputError`.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError

_BF16 = "bfloat16"  # no numpy dtype: stored as uint16, widened to float32 by _bf16_to_f32
# a direction is at most [1, 18, 512]; anything far bigger is refused before it is allocated
MAX_ELEMENTS = 1 << 24
_MAX_PICKLE_BYTES = 1 << 24

# torch.<Name>Storage -> numpy dtype (the typed storages torch.save records for each tensor dtype)
_STORAGES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": _BF16,
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


def _bf16_to_f32(raw: bytes) -> np.ndarray:
    """Little-endian bfloat16 bytes -> float32 (a bfloat16 is the upper half of a float32)."""
    u16 = np.frombuffer(raw, dtype="<u2")
    return (u16.astype(np.uint32) << 16).view(np.float32)


def _is_ints(v, n: int = -1) -> bool:
    """``v`` is a tuple/list of non-negative ints (of length ``n`` unless -1)."""
    return isinstance(v, (tuple, list)) and (n < 0 or len(v) == n) and all(type(x) is int and x >= 0 for x in v)


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    """numpy twin of ``torch._utils._rebuild_tensor_v2``: a strided view of the storage, copied."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise InputError(f"tensor storage is a {type(storage).__name__}, not a stored array")
    if type(offset) is not int or offset < 0 or not _is_ints(size) or not _is_ints(stride, len(size)):
        raise InputError(f"tensor geometry offset={offset!r} size={size!r} stride={stride!r} is not valid")
    if math.prod(size) > MAX_ELEMENTS:
        raise InputError(f"tensor of shape {list(size)} is far larger than a direction")
    item = storage.itemsize
    if not size:
        if offset >= storage.size:
            raise InputError(f"scalar tensor at offset {offset} overruns its {storage.size}-element storage")
        return storage[offset : offset + 1].reshape(()).copy()
    need = offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))
    if need > storage.size:
        raise InputError(f"tensor of shape {list(size)} overruns its {storage.size}-element storage")
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size), strides=tuple(s * item for s in stride))
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
        name = stype.name if isinstance(stype, _StorageType) else None
        if name not in _STORAGES:
            raise InputError(f"direction storage type {stype!r} is not supported (save it as float32)")
        if not isinstance(key, str) or type(numel) is not int or not 0 <= numel <= MAX_ELEMENTS:
            raise InputError(f"storage {key!r} of {numel!r} elements is not a valid direction storage")
        dtype = _STORAGES[name]
        itemsize = 2 if dtype == _BF16 else np.dtype(dtype).itemsize
        info = self._archive.getinfo(f"{self._prefix}data/{key}")  # KeyError: a missing storage
        if info.file_size != numel * itemsize:  # checked before reading: no decompression bomb
            raise InputError(
                f"storage {key} holds {info.file_size} bytes, the pickle says {numel} elements of {itemsize} bytes"
            )
        raw = self._archive.read(info)
        if dtype == _BF16:
            return _bf16_to_f32(raw)
        return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype, copy=False)


def _read_pt(path: Path) -> np.ndarray:
    if not zipfile.is_zipfile(path):
        raise InputError(
            f"{path} is not a PyTorch zip-format file (legacy torch.save format or not a .pt); "
            "convert it where torch is present: np.save('d.npy', torch.load('d.pt').cpu().numpy())"
        )
    try:
        with zipfile.ZipFile(path) as z:
            pkl = [n for n in z.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
            if len(pkl) != 1:
                raise InputError(f"{path}: expected one */data.pkl in the archive, found {len(pkl)}")
            if z.getinfo(pkl[0]).file_size > _MAX_PICKLE_BYTES:
                raise InputError(f"{path}: its pickle is far larger than one tensor's")
            prefix = pkl[0][: -len("data.pkl")]
            obj = _TensorUnpickler(z.read(pkl[0]), z, prefix).load()
    except InputError as e:
        raise InputError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None
    except Exception as e:  # a hostile or corrupt file may fail anywhere in zipfile/pickle: always an input error
        raise InputError(f"{path}: not a readable tensor file ({type(e).__name__}: {e})") from None
    if not isinstance(obj, np.ndarray):
        raise InputError(f"{path} holds a {type(obj).__name__}, expected one tensor")
    return obj


# safetensors dtype -> (numpy dtype, bytes per element)
_SAFETENSORS = {"F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": (_BF16, 2), "F64": ("<f8", 8)}
_MAX_HEADER_BYTES = 100 << 20  # the format's own limit


def _read_safetensors(path: Path) -> np.ndarray:
    """The one tensor of a ``.safetensors`` file (F32/F16/BF16/F64), parsed without the safetensors package."""
    size = path.stat().st_size
    if size > 8 + _MAX_HEADER_BYTES + 8 * MAX_ELEMENTS:  # before reading it into memory
        raise InputError(f"{path}: {size} bytes is far larger than one direction")
    data = path.read_bytes()
    if len(data) < 8:
        raise InputError(f"{path}: too short for a safetensors file")
    n = int.from_bytes(data[:8], "little")
    if n > min(_MAX_HEADER_BYTES, len(data) - 8):
        raise InputError(f"{path}: safetensors header of {n} bytes does not fit the {len(data)}-byte file")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{path}: safetensors header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise InputError(f"{path}: safetensors header is not a JSON object")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if len(tensors) != 1:
        raise InputError(f"{path} holds {len(tensors)} tensors ({', '.join(sorted(tensors)[:5])}), expected one")
    ((name, info),) = tensors.items()
    if not isinstance(info, dict):
        raise InputError(f"{path}: tensor {name!r} has no dtype/shape/data_offsets entry")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in _SAFETENSORS:
        raise InputError(f"{path}: tensor {name!r} has dtype {dtype!r}; supported: {', '.join(_SAFETENSORS)}")
    if not _is_ints(shape) or not _is_ints(offsets, 2) or offsets[0] > offsets[1]:
        raise InputError(f"{path}: tensor {name!r} has shape {shape!r} / data_offsets {offsets!r}, not valid")
    if math.prod(shape) > MAX_ELEMENTS:
        raise InputError(f"{path}: tensor of shape {list(shape)} is far larger than a direction")
    np_dtype, itemsize = _SAFETENSORS[dtype]
    body = memoryview(data)[8 + n :]
    lo, hi = offsets
    if hi > len(body) or hi - lo != math.prod(shape) * itemsize:
        raise InputError(
            f"{path}: tensor {name!r} ({dtype} {list(shape)}) does not match its data_offsets "
            f"{offsets} in a {len(body)}-byte buffer"
        )
    raw = bytes(body[lo:hi])
    arr = _bf16_to_f32(raw) if np_dtype == _BF16 else np.frombuffer(raw, dtype=np_dtype)
    return arr.reshape(shape)


def load_direction(path: str | os.PathLike) -> np.ndarray:
    """Read an edit direction from ``.pt`` (torch zip format), ``.safetensors`` or ``.npy``, without torch.

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
        try:  # mapped first, so a header declaring a huge array allocates nothing
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
            if arr.size > MAX_ELEMENTS:
                raise InputError(f"{p}: array of shape {list(arr.shape)} is far larger than a direction")
            arr = np.array(arr)
        except InputError:
            raise
        except Exception as e:  # numpy's format parser fails in many ways on a corrupt file
            raise InputError(f"{p}: not a plain .npy array ({type(e).__name__}: {e})") from None
    elif p.suffix.lower() == ".safetensors":
        arr = _read_safetensors(p)
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
    shape: tuple[int, ...] = d.shape
    while d.ndim > 2 and d.shape[0] == 1:
        d = d[0]
    if d.ndim == 1:
        d = d[None]
    if d.ndim != 2 or d.shape[1] != 512:
        raise InputError(
            f"{name} has shape {list(shape)}; a StyleGAN2 W+ direction is [512], [1, 512] or [1, {n_styles}, 512]"
        )
    if d.shape[0] not in (1, n_styles):
        raise InputError(
            f"{name} has {d.shape[0]} style rows ({list(shape)}) but the model has {n_styles} styles "
            f"(a direction for a {d.shape[0]}-style generator does not fit this one)"
        )
    return np.ascontiguousarray(np.broadcast_to(d, (n_styles, 512)))  # [S, 512]
