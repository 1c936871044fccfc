"""Engine records and the artifacts manifest: the details the mutation run found untested (docs/mutation.md).

Records (``restyle_rt.engine.records``), the load-time engine check (``artifacts.check_record``), the INT8 graph
lookup and the settings read back from TensorRT (``restyle_rt.engine.settings``, on the toy graphs: parse and
configure only, under a second). Each expectation is written out here, not computed with the code under test.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from restyle_rt import artifacts
from restyle_rt.engine import records, settings
from restyle_rt.errors import ArtifactError
from restyle_rt.manifest import EngineRecord, Int8Record
from restyle_rt.spec import BatchProfile

pytestmark = pytest.mark.unit

FLAVOUR, VERSION = "tensorrt-rtx", "1.7.1.116"


@pytest.mark.parametrize(
    "text,cc",
    [
        ("8.6", (8, 6)),
        ("86", (8, 6)),
        ("sm_86", (8, 6)),
        (" SM_89 ", (8, 9)),
        ("sm120", (12, 0)),
        ("12.0", (12, 0)),
        ("10.10", (10, 10)),
    ],
)
def test_parse_cc_accepts_the_usual_spellings(text, cc):
    assert records.parse_cc(text) == cc


@pytest.mark.parametrize("text", ["8", "", "sm_x", "ab", "eight.six", "8.6.1"])
def test_parse_cc_refuses_what_is_no_compute_capability(text):
    with pytest.raises(ValueError) as e:
        records.parse_cc(text)
    if "." not in text:
        assert str(e.value) == f"compute capability {text!r}: expected MAJOR.MINOR, e.g. 8.6"


def test_cc_list_normalises_every_spelling():
    assert records.cc_list(["sm_86", "89", "9.0"]) == ["8.6", "8.9", "9.0"]


def test_engine_file_names():
    assert records.engine_file("encoder", "fp16") == "engines/encoder.fp16.engine"
    assert records.fp16_onnx_file("synthesis") == "engines/synthesis.fp16.onnx"


def _rec(graph="encoder", precision="fp16", **kw):
    rec = {
        "graph": graph,
        "precision": precision,
        "file": records.engine_file(graph, precision),
        "size_bytes": 4,
        "build_seconds": 12.34,
        "trt_flavour": FLAVOUR,
        "trt_version": VERSION,
        "compute_capabilities": ["8.6", "8.9"],
    }
    return EngineRecord.from_dict({**rec, **kw})


def test_summarize_is_one_line_per_record():
    lines = records.summarize([_rec(size_bytes=3 * 2**20)])
    assert lines == [
        ("encoder   fp16       3.0 MiB     12.3 s  tensorrt-rtx 1.7.1.116  cc 8.6,8.9  -> engines/encoder.fp16.engine")
    ]


@pytest.fixture
def art_root(make_toy):
    d, _ = make_toy("art")
    (d / records.ENGINES_DIR).mkdir()
    return d


def _write_engine(root, rec, data=b"plan"):
    (root / rec.file).write_bytes(data)
    return rec


def test_upsert_replaces_only_its_own_record_and_keeps_them_sorted(art_root):
    for g, p in (("synthesis", "fp32"), ("encoder", "fp16"), ("encoder", "fp32")):
        records.upsert_record(art_root, _rec(g, p))
    m = records.upsert_record(art_root, _rec("encoder", "fp16", trt_version="new"))
    on_disk = json.loads((art_root / artifacts.MANIFEST).read_text())
    assert m.to_dict() == on_disk
    assert [(r["graph"], r["precision"]) for r in on_disk["engines"]] == [
        ("encoder", "fp16"),
        ("encoder", "fp32"),
        ("synthesis", "fp32"),
    ]
    assert [r["trt_version"] for r in on_disk["engines"]] == ["new", VERSION, VERSION]
    assert on_disk["format"] == artifacts.FORMAT  # the rest of the manifest is kept


def test_is_current_needs_the_file_its_size_and_every_wanted_key(art_root):
    want = records.BuildRequest(
        trt_flavour=FLAVOUR,
        trt_version=VERSION,
        compute_capabilities=("8.6", "8.9"),
        profile=BatchProfile(1, 1, 8),
        source_sha256="abc",
        require_user_allocation=True,
    )
    rec = _rec(profile=[1, 1, 8], source_sha256="abc", require_user_allocation=True)
    assert not records.is_current(art_root, None, want)
    assert not records.is_current(art_root, rec, want)  # no file yet
    _write_engine(art_root, rec, b"plan")
    assert records.is_current(art_root, rec, want)
    assert not records.is_current(art_root, dataclasses.replace(rec, size_bytes=5), want)
    assert not records.is_current(art_root, rec, dataclasses.replace(want, profile=BatchProfile(1, 2, 8)))
    for key, other in (
        ("trt_flavour", "tensorrt"),
        ("trt_version", "1.8"),
        ("compute_capabilities", ("8.6",)),
        ("source_sha256", "def"),
        ("require_user_allocation", False),
    ):
        assert not records.is_current(art_root, rec, dataclasses.replace(want, **{key: other})), key
    unsourced = _rec(profile=[1, 1, 8], require_user_allocation=True)
    assert not records.is_current(art_root, unsourced, want)  # a key the record lacks


def test_build_request_is_what_the_record_stores():
    want = records.BuildRequest(
        trt_flavour=FLAVOUR,
        trt_version=VERSION,
        compute_capabilities=("8.6",),
        profile=BatchProfile(1, 2, 4),
        source_sha256="abc",
        require_user_allocation=False,
    )
    assert want.to_dict() == {
        "trt_flavour": FLAVOUR,
        "trt_version": VERSION,
        "compute_capabilities": ["8.6"],
        "profile": [1, 2, 4],
        "source_sha256": "abc",
        "require_user_allocation": False,
    }
    rec = EngineRecord.from_dict({"graph": "encoder", "precision": "fp32", "file": "e", **want.to_dict()})
    assert all(getattr(rec, f.name) == getattr(want, f.name) for f in dataclasses.fields(want))


def _art(root, engines=(), int8=None):
    art = artifacts.load(root)
    art.manifest = dataclasses.replace(
        art.manifest, engines=tuple(engines), int8=None if int8 is None else Int8Record.from_dict(int8)
    )
    return art


def test_find_engine_matches_graph_and_precision(art_root):
    a, b = _rec("encoder", "fp16"), _rec("synthesis", "fp16")
    art = _art(art_root, [a, b])
    assert artifacts.find_engine(art, "synthesis", "fp16") is b
    assert artifacts.find_engine(art, "encoder", "fp32") is None
    assert artifacts.find_engine(_art(art_root), "encoder", "fp16") is None


def test_incompatibility_names_each_side():
    rec = _rec()
    assert artifacts.incompatibility(rec, FLAVOUR, VERSION, (8, 9)) == []
    assert artifacts.incompatibility(rec, FLAVOUR, VERSION, None) == []  # no device: nothing to compare
    assert artifacts.incompatibility(rec, "tensorrt", "10.13", None) == [
        "built with 'tensorrt-rtx', this runtime is 'tensorrt'"
    ]  # another flavour: its version is not compared
    assert artifacts.incompatibility(rec, FLAVOUR, "1.8.0", None) == [
        "built with tensorrt-rtx 1.7.1.116, this runtime has tensorrt-rtx 1.8.0"
    ]
    assert artifacts.incompatibility(rec, FLAVOUR, VERSION, (7, 5)) == [
        "built for compute capabilities 8.6, 8.9, this GPU is 7.5"
    ]
    assert artifacts.incompatibility(_rec(compute_capabilities=[]), FLAVOUR, VERSION, (8, 6)) == [
        "built for compute capabilities (none recorded), this GPU is 8.6"
    ]
    assert len(artifacts.incompatibility(rec, FLAVOUR, "2", (7, 5))) == 2


def test_check_record_refusals_name_the_rebuild(art_root):
    rec = _write_engine(art_root, _rec(size_bytes=4), b"plan")
    fix = f"restyle-rt build {art_root} --precision fp16 --rebuild"
    assert artifacts.check_record(_art(art_root, [rec]), "encoder", "fp16", FLAVOUR, VERSION, (8, 6)) is rec
    with pytest.raises(ArtifactError) as e:
        artifacts.check_record(_art(art_root, [rec]), "encoder", "fp32", FLAVOUR, VERSION)
    assert str(e.value) == (
        f"{art_root} has no encoder fp32 engine in its manifest; build one with "
        f"`restyle-rt build {art_root} --precision fp32`"
    )
    with pytest.raises(ArtifactError) as e:
        artifacts.check_record(
            _art(art_root, [dataclasses.replace(rec, size_bytes=5)]), "encoder", "fp16", FLAVOUR, VERSION
        )
    assert str(e.value) == (f"engine {art_root / rec.file}: 4 bytes on disk, manifest says 5; run `{fix}`")
    with pytest.raises(ArtifactError) as e:
        artifacts.check_record(_art(art_root, [rec]), "encoder", "fp16", FLAVOUR, "9.9")
    assert str(e.value) == (
        f"engine {art_root / rec.file} does not match this machine: built with tensorrt-rtx "
        f"1.7.1.116, this runtime has tensorrt-rtx 9.9. Run `{fix}`"
    )
    with pytest.raises(ArtifactError) as e:  # the GPU is compared too; every reason is named
        artifacts.check_record(_art(art_root, [rec]), "encoder", "fp16", FLAVOUR, "9.9", (7, 5))
    assert str(e.value) == (
        f"engine {art_root / rec.file} does not match this machine: built with tensorrt-rtx "
        "1.7.1.116, this runtime has tensorrt-rtx 9.9; built for compute capabilities 8.6, 8.9, "
        f"this GPU is 7.5. Run `{fix}`"
    )
    (art_root / rec.file).unlink()
    with pytest.raises(ArtifactError) as e:
        artifacts.check_record(_art(art_root, [rec]), "encoder", "fp16", FLAVOUR, VERSION)
    assert str(e.value) == f"engine {art_root / rec.file} listed in the manifest is missing; run `{fix}`"


def test_check_record_compares_the_hash_only_when_asked(art_root):
    rec = _write_engine(art_root, _rec(size_bytes=4, sha256="0" * 64), b"plan")
    art = _art(art_root, [rec])
    assert artifacts.check_record(art, "encoder", "fp16", FLAVOUR, VERSION) is rec
    with pytest.raises(ArtifactError, match="sha256 differs from the manifest"):
        artifacts.check_record(art, "encoder", "fp16", FLAVOUR, VERSION, verify_hash=True)
    good = dataclasses.replace(rec, sha256=artifacts.sha256_file(art_root / rec.file))
    assert artifacts.check_record(_art(art_root, [good]), "encoder", "fp16", FLAVOUR, VERSION, verify_hash=True)
    # an older record without a size
    unsized = EngineRecord.from_dict({k: v for k, v in good.to_dict().items() if k != "size_bytes"})
    assert artifacts.check_record(_art(art_root, [unsized]), "encoder", "fp16", FLAVOUR, VERSION) is unsized


def test_int8_graph_path(art_root):
    with pytest.raises(ArtifactError, match="has no INT8 graphs.*restyle-rt calibrate"):
        artifacts.int8_graph_path(_art(art_root), "encoder")
    (art_root / "int8").mkdir()
    (art_root / "int8" / "encoder.cpu.onnx").write_bytes(b"x")
    int8 = {
        "graphs": {
            "encoder": {"cpu": {"file": "int8/encoder.cpu.onnx"}},
            "synthesis": {"cpu": {"file": "int8/synthesis.cpu.onnx"}},
        }
    }
    art = _art(art_root, int8=int8)
    assert artifacts.int8_graph_path(art, "encoder") == art_root / "int8" / "encoder.cpu.onnx"
    missing = r"synthesis.cpu.onnx \(INT8 synthesis, listed in the manifest\) is missing"
    with pytest.raises(ArtifactError, match=missing):
        artifacts.int8_graph_path(art, "synthesis")
    assert artifacts.int8_graph_path(_art(art_root, int8={"graphs": {}}), "encoder") is None
    assert artifacts.int8_graph_path(_art(art_root, int8={"method": "minmax"}), "encoder") is None


# --- settings read back from TensorRT (restyle_rt.engine.settings) ---


class _DType:
    def __init__(self, name):
        self.name = name


@pytest.mark.parametrize(
    "dtype,name",
    [
        (_DType("HALF"), "float16"),
        (_DType("FLOAT"), "float32"),
        (_DType("BF16"), "bfloat16"),
        (_DType("INT64"), "int64"),
        ("DataType.INT8", "int8"),
        ("DataType.FP8", "float8"),
        (_DType("NEWTYPE"), "newtype"),
        ("DataType.NEWTYPE", "newtype"),
        ("tensorrt.DataType.HALF", "float16"),
        ("HALF", "float16"),
    ],
)
def test_dtype_name(dtype, name):
    assert settings.dtype_name(dtype) == name


def _module(flag: bool, strategy: bool):
    from types import SimpleNamespace

    flags = SimpleNamespace(**({settings.USER_ALLOCATION_FLAG: 1} if flag else {}))
    return SimpleNamespace(BuilderFlag=flags, **({"DynamicShapesKernelSpecializationStrategy": 1} if strategy else {}))


def test_runtime_config_per_flavour():
    rtx = _module(flag=True, strategy=True)
    assert settings._runtime_config(rtx, [settings.USER_ALLOCATION_FLAG]) == {
        "execution_context_allocation": "user_managed",
        "stream_capture": True,
        "dynamic_shapes_kernel_specialization": "eager",
    }
    assert settings._runtime_config(rtx, ["TF32"]) == {  # RTX without the flag: no capture, lazy kernels
        "execution_context_allocation": "user_managed",
        "stream_capture": False,
        "dynamic_shapes_kernel_specialization": "lazy",
    }
    assert settings._runtime_config(_module(flag=False, strategy=False), []) == {  # standard TensorRT
        "execution_context_allocation": "user_managed",
        "stream_capture": True,
    }


@pytest.fixture(scope="module")
def trt_info():
    from restyle_rt.runtime.trt_compat import try_load_trt

    info = try_load_trt()
    if info is None or not info.compute_capability_api:
        pytest.skip("needs TensorRT-RTX (CPU-only ahead-of-time configure; standard TensorRT needs the GPU)")
    return info


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_settings_read_back_from_tensorrt_on_the_toy(make_toy, trt_info, precision):
    """Parse + configure the toy synthesis graph (no build): every recorded setting against TensorRT's objects."""
    from restyle_rt.engine import builder as B

    d, _ = make_toy("trt")
    art = artifacts.load(d)
    b = B.EngineBuilder(trt_info, B.BuildOptions(precision, art.profile, 1.0, compute_capabilities=["8.6", "12.0"]))
    onnx_path, keep = B._onnx_for(art, "synthesis", precision, b.strongly_typed)
    network, _parser, config, got = b.configure(onnx_path, art.spec, "synthesis", ["8.6", "12.0"], keep)
    trt = trt_info.module
    flags = [n for n, v in trt.BuilderFlag.__members__.items() if config.get_flag(v)]
    assert got["builder_flags"] == sorted(flags) and settings.USER_ALLOCATION_FLAG in flags
    assert got["require_user_allocation"] is True and got["strongly_typed"] is trt_info.strongly_typed
    assert got["tf32"] is ("TF32" in flags) and (precision == "fp16" or not got["tf32"])
    assert got["optimization_profiles"] == 1 and got["compute_capabilities"] == ["8.6", "12.0"]
    assert got["io"] == {  # TOY_SPEC: 4 styles, 24 px image, 16 px feedback; profile 1/1/8
        "latent": {
            "mode": "input",
            "dtype": "float32",
            "shape": [-1, 4, 512],
            "profile": [[1, 4, 512], [1, 4, 512], [8, 4, 512]],
        },
        "image": {"mode": "output", "dtype": "float32", "shape": [-1, 3, 24, 24]},
        "feedback": {"mode": "output", "dtype": "float32", "shape": [-1, 3, 16, 16]},
    }
    outputs = sum(network.get_layer(i).num_outputs for i in range(network.num_layers))
    assert sum(got["layer_dtypes"].values()) == outputs > 0
    assert list(got["layer_dtypes"]) == sorted(got["layer_dtypes"])
    assert ("float16" in got["layer_dtypes"]) is (precision == "fp16") and "float32" in got["layer_dtypes"]
    want_rc = {"execution_context_allocation": "user_managed", "stream_capture": True}
    if hasattr(trt, "DynamicShapesKernelSpecializationStrategy"):
        want_rc["dynamic_shapes_kernel_specialization"] = "eager"
    assert got["runtime_config"] == want_rc


# --- settings problems: exact reasons (each one is what `restyle-rt build` prints) ---


def _settings(flags=("REQUIRE_USER_ALLOCATION",), **kw):
    io = {
        "latent": {
            "mode": "input",
            "dtype": "float32",
            "shape": [-1, 1, 512],
            "profile": [[1, 1, 512], [2, 1, 512], [4, 1, 512]],
        },
        "image": {"mode": "output", "dtype": "float32", "shape": [-1, 3, 32, 32]},
    }
    s = {
        "builder_flags": list(flags),
        "require_user_allocation": "REQUIRE_USER_ALLOCATION" in flags,
        "strongly_typed": True,
        "tf32": "TF32" in flags,
        "optimization_profiles": 1,
        "io": io,
    }
    return {**s, **kw}


EXPECTED_IO = {"latent": ("input", [-1, 1, 512]), "image": ("output", [-1, 3, 32, 32])}


def _problems(s, **kw):
    args = {
        "strongly_typed": True,
        "user_allocation": True,
        "precision": "fp32",
        "batch": [1, 2, 4],
        "expected_io": EXPECTED_IO,
    }
    return settings.problems(s, **{**args, **kw})


def test_problems_exact_reasons():
    assert _problems(_settings()) == []  # a styles dimension of 1 is static, not dynamic
    assert _problems(_settings(flags=())) == [
        (
            "BuilderFlag.REQUIRE_USER_ALLOCATION is not set: the engine's contexts may not be stream-capturable and the "
            "backend's CUDA-graph loop would fall back to eager execution"
        )
    ]
    assert _problems(_settings(flags=()), user_allocation=False) == []  # standard TensorRT has no such flag
    tf32 = _settings(flags=("REQUIRE_USER_ALLOCATION", "TF32"))
    assert _problems(tf32) == ["BuilderFlag.TF32 is set on an fp32 engine (fp32 means IEEE FP32)"]
    assert _problems(tf32, precision="fp16") == []  # TF32 is allowed where FP16 is
    flag_fp16 = {"strongly_typed": False, "precision": "fp16"}
    assert (
        _problems(
            _settings(strongly_typed=False, flags=("REQUIRE_USER_ALLOCATION", "FP16", "OBEY_PRECISION_CONSTRAINTS")),
            **flag_fp16,
        )
        == []
    )
    assert _problems(_settings(strongly_typed=False, flags=("REQUIRE_USER_ALLOCATION", "FP16")), **flag_fp16) == [
        (
            "precision-flag fp16 build without FP16 + OBEY_PRECISION_CONSTRAINTS "
            "(flags: ['REQUIRE_USER_ALLOCATION', 'FP16'])"
        )
    ]
    assert (
        _problems(
            _settings(strongly_typed=False, flags=("FP16", "OBEY_PRECISION_CONSTRAINTS")),
            user_allocation=False,
            **flag_fp16,
        )
        == []
    )  # exactly the two flags (TensorRT 8.5 / 10.x)
    assert _problems(_settings(strongly_typed=False), strongly_typed=False) == []  # fp32 needs no FP16 flag
    assert _problems(_settings(compute_capabilities=["8.6"]), ccs=["8.6", "8.9"]) == [
        "config targets compute capabilities ['8.6'], asked for ['8.6', '8.9']"
    ]


def test_profile_problems_check_every_input():
    s = _settings()
    s["io"] = {
        "image": s["io"]["image"],  # an output first: inputs after it are still checked
        "latent": {**s["io"]["latent"], "shape": [-1, -1, 512]},
    }
    why = _problems(s, expected_io={"image": EXPECTED_IO["image"], "latent": ("input", [-1, -1, 512])})
    assert "input 'latent' has shape [-1, -1, 512], expected a dynamic batch dimension only" in why, why


# --- the artifacts directory: refusals, cache location, seed records, durable engine writes ---


def test_check_replaceable_messages(tmp_path, monkeypatch):
    from restyle_rt.errors import OutputError

    monkeypatch.chdir(tmp_path)
    cases = {
        "": "--out is empty; name the artifacts directory to write, e.g. --out artifacts/ffhq",
        ".": ".: is the current directory or one of its parents; an export replaces its directory, so choose "
        "a new one, e.g. --out artifacts/NAME",
    }
    (tmp_path / "file").write_text("x")
    cases["file"] = "file: exists and is not a directory"
    cases["file/sub"] = f"--out {tmp_path / 'file'}: exists and is not a directory"
    for out, msg in cases.items():
        with pytest.raises(OutputError) as e:
            artifacts.check_replaceable(out, overwrite=True)
        assert str(e.value) == msg, out
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ArtifactError) as e:
        artifacts.check_replaceable("other", overwrite=False)
    assert str(e.value) == (
        "other exists and is not empty; pass overwrite=True (CLI: --force) to replace a previous export"
    )
    with pytest.raises(OutputError) as e:
        artifacts.check_replaceable("other", overwrite=True)
    assert str(e.value) == (
        "other: is not empty and is not a previous export; only a previous export is replaced, never other files"
    )


def test_verified_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTYLE_RT_CACHE", str(tmp_path / "c"))
    assert artifacts.verified_cache_dir() == tmp_path / "c" / "verified"
    monkeypatch.delenv("RESTYLE_RT_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert artifacts.verified_cache_dir() == tmp_path / "home" / ".cache" / "restyle-rt" / "verified"


def test_seed_records(make_toy):
    d, _ = make_toy("seeds")
    assert artifacts.seed_records(d) == {
        "latent_avg": {"file": "latent_avg.npy", "sha256": artifacts.sha256_file(d / "latent_avg.npy")},
        "avg_feedback": {"file": "avg_feedback.npy", "sha256": artifacts.sha256_file(d / "avg_feedback.npy")},
    }


def test_engine_and_manifest_writes_are_durable(tmp_path, monkeypatch):
    """Engines, timing caches and the manifest are fsync'ed (a power cut must not leave a truncated plan behind
    a record)."""
    import os

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    artifacts.write_bytes_atomic(tmp_path / "e.engine", b"plan")
    assert (tmp_path / "e.engine").read_bytes() == b"plan" and synced
    synced.clear()
    artifacts.write_manifest(tmp_path, {"engines": []})  # the manifest that records them, too
    assert json.loads((tmp_path / artifacts.MANIFEST).read_text()) == {"engines": []} and synced


def test_verify_file_cache_is_keyed_by_the_expected_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTYLE_RT_CACHE", str(tmp_path / "cache"))
    p = tmp_path / "g.onnx"
    p.write_bytes(b"graph")
    good, bad = artifacts.sha256_file(p), "f" * 64
    artifacts.verify_file(p, good, cache=False)
    assert not (tmp_path / "cache").exists()  # cache=False remembers nothing
    artifacts.verify_file(p, good)
    assert len(list((tmp_path / "cache" / "verified").iterdir())) == 1
    with pytest.raises(ArtifactError) as e:  # a remembered success is for that hash only
        artifacts.verify_file(p, bad)
    assert str(e.value) == (
        f"{p}: sha256 {good[:16]}… differs from the manifest's {bad[:16]}…; the file was "
        "modified or corrupted after export. Re-export (or restore the file); --no-verify skips "
        "this check"
    )
    with pytest.raises(ArtifactError) as e:
        artifacts.verify_file(tmp_path / "gone.onnx", good)
    assert str(e.value) == f"{tmp_path / 'gone.onnx'} listed in the manifest is missing"


def test_load_refusals_say_what_to_do(tmp_path):
    with pytest.raises(ArtifactError) as e:
        artifacts.load(b"/some/dir")
    assert str(e.value) == "artifacts directory b'/some/dir' is bytes; pass a str or Path (os.fsdecode(p))"
    with pytest.raises(ArtifactError) as e:
        artifacts.load(tmp_path / "none")
    assert str(e.value) == f"artifacts directory {tmp_path / 'none'} does not exist (make one with `restyle-rt export`)"


def _edit_manifest(d, fn):
    m = json.loads((d / artifacts.MANIFEST).read_text())
    (d / artifacts.MANIFEST).write_text(json.dumps(fn(m)))


def _pickled_seed(d):
    import numpy as np

    np.save(d / artifacts.LATENT_AVG, np.array([{"not": "numbers"}], dtype=object), allow_pickle=True)


def _float64_seed(d):
    import numpy as np

    np.save(d / artifacts.LATENT_AVG, np.load(d / artifacts.LATENT_AVG).astype(np.float64))


def _nan_seed(d):
    import numpy as np

    lat = np.load(d / artifacts.LATENT_AVG)
    lat[0, 0] = np.nan
    np.save(d / artifacts.LATENT_AVG, lat)


M = "{d}/manifest.json"
LOAD_REFUSALS = {
    "no manifest": (
        lambda d: (d / artifacts.MANIFEST).unlink(),
        "{d} has no manifest.json; is it an artifacts dir written by `restyle-rt export`?",
    ),
    "not JSON": (lambda d: (d / artifacts.MANIFEST).write_text("{"), M + " is not valid JSON: "),
    "not an object": (lambda d: (d / artifacts.MANIFEST).write_text("[]"), M + ": expected a JSON object, found list"),
    "format": (
        lambda d: _edit_manifest(d, lambda m: {**m, "format": "other"}),
        M + ": format is 'other', expected 'restyle-rt-artifacts'",
    ),
    "version": (
        lambda d: _edit_manifest(d, lambda m: {**m, "format_version": 2}),
        M + ": format_version 2 is not understood by this runtime (expects 1); re-export with this restyle-rt version",
    ),
    "spec": (lambda d: _edit_manifest(d, lambda m: {**m, "spec": {}}), M + ": spec is malformed ("),
    "no graphs": (
        lambda d: _edit_manifest(d, lambda m: {k: v for k, v in m.items() if k != "graphs"}),
        M + ": graphs.encoder missing",
    ),
    "graph file": (lambda d: (d / "synthesis.onnx").unlink(), "{d}/synthesis.onnx listed in the manifest is missing"),
    "seed file": (lambda d: (d / artifacts.LATENT_AVG).unlink(), "{d}/latent_avg.npy is missing"),
    "pickled seed": (_pickled_seed, "{d}/latent_avg.npy is not a readable .npy file: "),
    "float64 seed": (_float64_seed, "{d}/latent_avg.npy: expected float32 [4, 512], found float64 [4, 512]"),
    "NaN seed": (
        _nan_seed,
        (
            "{d}/latent_avg.npy: 1 of 2048 values are NaN or Inf; the loop would return NaN latents "
            "and black images. Re-export from the checkpoint"
        ),
    ),
}


@pytest.mark.parametrize("case", list(LOAD_REFUSALS))
def test_load_refusals_name_the_file_and_the_fix(make_toy, case):
    """Each refusal's exact text (prefix where it quotes a parser's own message); a pickled seed is never loaded."""
    d, _ = make_toy(case.replace(" ", "-"))
    edit, want = LOAD_REFUSALS[case]
    edit(d)
    with pytest.raises(ArtifactError) as e:
        artifacts.load(d)
    assert str(e.value).startswith(want.format(d=d)), str(e.value)
    assert want.endswith((": ", "(")) or str(e.value) == want.format(d=d)


def test_save_manifest_writes_what_load_reads(make_toy):
    d, _ = make_toy("save")
    art = artifacts.load(d)
    art.manifest = dataclasses.replace(art.manifest, engines=(_rec(),))
    art.save_manifest()
    assert artifacts.load(d).manifest.engines == (_rec(),)
