"""Direction files built byte by byte, without torch or safetensors: seeds for the format and fuzz tests."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Sequence

import numpy as np


def _unicode(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b  # BINUNICODE


def _int(v: int) -> bytes:
    return b"J" + struct.pack("<i", v)  # BININT


def _tuple(items: Sequence[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def tensor_pickle(
    storage: str, numel: int, offset: int, size: Sequence[int], stride: Sequence[int], location: str = "cpu"
) -> bytes:
    """The protocol-2 pickle ``torch.save`` writes for one tensor: ``_rebuild_tensor_v2(storage, ...)``."""
    pid = _tuple([_unicode("storage"), f"ctorch\n{storage}\n".encode(), _unicode("0"), _unicode(location), _int(numel)])
    args = _tuple(
        [
            pid + b"Q",
            _int(offset),
            _tuple([_int(n) for n in size]),
            _tuple([_int(s) for s in stride]),
            b"\x89",
            b"ccollections\nOrderedDict\n)R",
        ]
    )
    return b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R."


def pt_bytes(pickle_bytes: bytes, storage: bytes) -> bytes:
    """A torch zip-format file: ``archive/data.pkl`` and its one storage ``archive/data/0``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/data/0", storage)
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def bf16_bytes(a: np.ndarray) -> bytes:
    """float32 -> bfloat16 bytes by truncation (exact for values that are already bfloat16)."""
    return (np.ascontiguousarray(a, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()


def safetensors_bytes(tensors: dict[str, tuple], metadata: dict[str, str] = None) -> bytes:
    """A ``.safetensors`` file: ``{name: (dtype, shape, raw bytes)}`` laid out as the format says."""
    header, body = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(body), len(body) + len(raw)]}
        body += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)  # the reference writer pads the header to 8 bytes
    return struct.pack("<Q", len(h)) + h + body
