"""Fuzzing the direction readers: random and mutated files only ever raise InputError (never run code, never crash)."""

from __future__ import annotations

import atexit
import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from direction_files import bf16_bytes, pt_bytes, safetensors_bytes, tensor_pickle

from restyle_rt.errors import InputError
from restyle_rt.workflows import directions

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = pytest.mark.unit
# no example database, and hypothesis' own cache in a temporary folder, not .hypothesis/ in the checkout
FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
_DIR = Path(tempfile.mkdtemp(prefix="restyle-rt-fuzz-"))
atexit.register(shutil.rmtree, _DIR, True)
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(_DIR / "hypothesis"))

_A = (np.linspace(-1, 1, 512, dtype=np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32).reshape(1, 512)
SEED_PICKLE = tensor_pickle("FloatStorage", 512, 0, (1, 512), (512, 1))
SEED_PT = pt_bytes(SEED_PICKLE, _A.astype("<f4").tobytes())
SEED_PT_BF16 = pt_bytes(tensor_pickle("BFloat16Storage", 512, 0, (1, 512), (512, 1)), bf16_bytes(_A))
SEED_ST = safetensors_bytes({"d": ("F32", (1, 512), _A.astype("<f4").tobytes())})


def _load(data: bytes, suffix: str):
    p = _DIR / f"d{suffix}"
    p.write_bytes(data)
    try:
        out = directions.load_direction(p)
    except InputError:
        return None
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and np.isfinite(out).all()
    return out


@st.composite
def mutated(draw, seed: bytes):
    """``seed`` with a few bytes overwritten, a slice deleted or duplicated, or truncated."""
    b = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "delete", "dup", "truncate"]))
        if not b:
            break
        i = draw(st.integers(0, len(b) - 1))
        if op == "set":
            b[i] = draw(st.integers(0, 255))
        elif op == "delete":
            del b[i : i + draw(st.integers(1, 16))]
        elif op == "dup":
            b[i:i] = b[i : i + draw(st.integers(1, 16))]
        else:
            del b[i:]
    return bytes(b)


def test_seeds_are_valid():
    for data, suffix in ((SEED_PT, ".pt"), (SEED_PT_BF16, ".pt"), (SEED_ST, ".safetensors")):
        np.testing.assert_array_equal(_load(data, suffix), _A)


@FUZZ
@given(data=st.binary(max_size=4096), suffix=st.sampled_from([".pt", ".safetensors", ".npy"]))
def test_random_bytes(data, suffix):
    _load(data, suffix)


@FUZZ
@given(data=st.one_of(mutated(SEED_PT), mutated(SEED_PT_BF16)))
def test_mutated_pt_file(data):
    _load(data, ".pt")


def _rezip(pkl: bytes) -> bytes:
    """A well-formed archive around a (mutated) pickle: the zip checks pass, the unpickler meets the damage."""
    with zipfile.ZipFile(io.BytesIO(SEED_PT)) as z:
        storage = z.read("archive/data/0")
    return pt_bytes(pkl, storage)


@FUZZ
@given(pkl=st.one_of(mutated(SEED_PICKLE), st.binary(max_size=512).map(lambda b: b"\x80\x02" + b + b".")))
def test_mutated_pickle_in_a_valid_archive(pkl):
    _load(_rezip(pkl), ".pt")


@FUZZ
@given(data=mutated(SEED_ST))
def test_mutated_safetensors(data):
    _load(data, ".safetensors")


@FUZZ
@given(
    shape=st.lists(st.integers(-2, 600), max_size=4),
    stride=st.lists(st.integers(-2, 600), max_size=4),
    offset=st.integers(-2, 600),
    numel=st.integers(-1, 2000),
)
def test_tensor_geometry(shape, stride, offset, numel):
    """Any shape/stride/offset/numel the pickle may claim: refused, or a view inside the stored elements."""
    storage = np.arange(max(numel, 0), dtype="<f4").tobytes()
    out = _load(pt_bytes(tensor_pickle("FloatStorage", numel, offset, shape, stride), storage), ".pt")
    if out is not None:
        assert out.size == 0 or out.max() < max(numel, 1)
