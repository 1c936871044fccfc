"""Direction files beyond float32 ``.pt``: bfloat16 storages, ``.safetensors`` (F32/F16/BF16/F64), hostile geometry."""

from __future__ import annotations

import numpy as np
import pytest
from direction_files import bf16_bytes, pt_bytes, safetensors_bytes, tensor_pickle

from restyle_rt.errors import InputError
from restyle_rt.workflows import directions

pytestmark = pytest.mark.unit


def _bf16_values(shape, seed=0) -> np.ndarray:
    """float32 values that are exact in bfloat16 (low 16 bits zero)."""
    a = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return (a.view(np.uint32) & 0xFFFF0000).view(np.float32)


def test_bf16_pt_written_by_torch(tmp_path):
    torch = pytest.importorskip("torch")
    t = torch.randn(1, 4, 512, generator=torch.Generator().manual_seed(5)).bfloat16()
    torch.save(t, tmp_path / "d.pt")
    got = directions.load_direction(tmp_path / "d.pt")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, t.float().numpy())
    view = torch.randn(512, 3).bfloat16().t()[2:3]  # strided view, storage offset 2
    torch.save(view, tmp_path / "v.pt")
    np.testing.assert_array_equal(directions.load_direction(tmp_path / "v.pt"), view.float().numpy())


def test_hand_built_pt_is_what_torch_reads(tmp_path):
    """The byte-level .pt the fuzz tests mutate is a real torch file (bf16 and f32)."""
    a = _bf16_values((1, 512))
    p = tmp_path / "b.pt"
    p.write_bytes(pt_bytes(tensor_pickle("BFloat16Storage", 512, 0, (1, 512), (512, 1)), bf16_bytes(a)))
    np.testing.assert_array_equal(directions.load_direction(p), a)
    torch = pytest.importorskip("torch")
    t = torch.load(p, weights_only=True)
    assert t.dtype == torch.bfloat16 and np.array_equal(t.float().numpy(), a)


@pytest.mark.parametrize(
    "size, stride, offset, match",
    [
        ((1, 512), (-1, 1), 0, "geometry"),  # a negative stride would read before the storage
        ((1, 512), (512, 1), -1, "geometry"),
        ((1, 513), (513, 1), 0, "overruns"),
        ((1 << 30,), (0,), 0, "far larger"),  # stride 0: a 4 GiB copy of one element, refused before allocating
        ((), (), 600, "overruns"),
    ],
)
def test_hostile_tensor_geometry_is_refused(tmp_path, size, stride, offset, match):
    p = tmp_path / "g.pt"
    p.write_bytes(pt_bytes(tensor_pickle("FloatStorage", 512, offset, size, stride), np.zeros(512, "<f4").tobytes()))
    with pytest.raises(InputError, match=match):
        directions.load_direction(p)


def test_storage_size_checked_before_reading(tmp_path):
    p = tmp_path / "s.pt"
    p.write_bytes(pt_bytes(tensor_pickle("FloatStorage", 512, 0, (512,), (1,)), b"\0" * 100))
    with pytest.raises(InputError, match="holds 100 bytes"):
        directions.load_direction(p)
    p.write_bytes(pt_bytes(tensor_pickle("FloatStorage", 1 << 30, 0, (512,), (1,)), b"\0" * 2048))
    with pytest.raises(InputError, match="not a valid direction storage"):
        directions.load_direction(p)


@pytest.mark.parametrize(
    "dtype, encode",
    [
        ("F32", lambda a: a.astype("<f4").tobytes()),
        ("F16", lambda a: a.astype("<f2").tobytes()),
        ("F64", lambda a: a.astype("<f8").tobytes()),
        ("BF16", bf16_bytes),
    ],
)
def test_safetensors_dtypes(tmp_path, dtype, encode):
    a = _bf16_values((1, 4, 512), seed=2)  # exact in every one of the four dtypes' ranges used here
    if dtype == "F16":
        a = a.astype(np.float16).astype(np.float32)
    p = tmp_path / "d.safetensors"
    p.write_bytes(safetensors_bytes({"direction": (dtype, a.shape, encode(a))}, metadata={"format": "np"}))
    got = directions.load_direction(p)
    assert got.dtype == np.float32 and got.shape == (1, 4, 512)
    np.testing.assert_array_equal(got, a)


def test_safetensors_written_by_the_reference_library(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    a = np.random.default_rng(4).standard_normal((1, 512)).astype(np.float16)
    st.save_file({"age": a}, str(tmp_path / "age.safetensors"), metadata={"k": "v"})
    np.testing.assert_array_equal(directions.load_direction(tmp_path / "age.safetensors"), a.astype(np.float32))


@pytest.mark.parametrize(
    "tensors, meta, match",
    [
        ({}, None, "holds 0 tensors"),
        ({"a": ("F32", (512,), b"\0" * 2048), "b": ("F32", (512,), b"\0" * 2048)}, None, "holds 2 tensors"),
        ({"a": ("I64", (512,), b"\0" * 4096)}, None, "dtype 'I64'"),
        ({"a": ("F32", (513,), b"\0" * 2048)}, None, "does not match its data_offsets"),
        ({"a": ("F32", (-1, 512), b"\0" * 2048)}, None, "not valid"),
    ],
)
def test_bad_safetensors(tmp_path, tensors, meta, match):
    p = tmp_path / "d.safetensors"
    p.write_bytes(safetensors_bytes(tensors, meta))
    with pytest.raises(InputError, match=match):
        directions.load_direction(p)


def test_safetensors_header_bounds(tmp_path):
    p = tmp_path / "d.safetensors"
    for data, match in [
        (b"\1\2", "too short"),
        ((1 << 40).to_bytes(8, "little") + b"{}", "does not fit"),
        ((4).to_bytes(8, "little") + b"{no}", "not JSON"),
        ((2).to_bytes(8, "little") + b"[]", "not a JSON object"),
    ]:
        p.write_bytes(data)
        with pytest.raises(InputError, match=match):
            directions.load_direction(p)
    with open(p, "wb") as f:  # sparse: refused from its size, never read into memory
        f.truncate(1 << 30)
    with pytest.raises(InputError, match="far larger than one direction"):
        directions.load_direction(p)
