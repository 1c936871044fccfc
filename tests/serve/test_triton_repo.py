"""``restyle-rt triton-repo``: the repository really runs on the tritonserver binary inside the PyTriton wheel.

That binary has only the Python backend, so the run uses ``--graphs python`` (ONNX Runtime inside Python-backend
graph models) under the real BLS ``restyle`` model. The ``onnxruntime_onnx`` and ``tensorrt_plan`` configs are
only *validated*: parsed against Triton's ModelConfig protobuf (shipped in tritonclient), never loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest

from restyle_rt import Inverter
from restyle_rt.errors import ArtifactError, InputError
from restyle_rt.serve.repo import RepoConfig, write_repository

from .conftest import ROOT, START_TIMEOUT_S, free_ports, serve_available
from .test_server import _decode, _inputs, _png, assert_batch_parity

pytestmark = pytest.mark.unit


def _parse_config(path: Path):
    pb = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] not installed")
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), pb.ModelConfig())


def test_repository_layout(toy, tmp_path):
    art = toy[0]
    repo = write_repository(art, tmp_path / "ort", RepoConfig(graphs="auto", instances=2))
    assert repo.platforms == {
        "encoder": "onnxruntime_onnx",
        "synthesis": "onnxruntime_onnx",  # no engines built
        "restyle": "python (BLS)",
    }
    for f in (
        "encoder/1/model.onnx",
        "synthesis/1/model.onnx",
        "restyle/1/model.py",
        "restyle/1/artifacts/latent_avg.npy",
        "restyle/1/artifacts/avg_feedback.npy",
    ):
        assert (tmp_path / "ort" / f).is_file(), f
    assert 'platform: "onnxruntime_onnx"' in (tmp_path / "ort" / "encoder" / "config.pbtxt").read_text()
    with pytest.raises(ArtifactError, match="standard-TensorRT"):
        write_repository(art, tmp_path / "plan", RepoConfig(graphs="tensorrt_plan"))
    with pytest.raises(InputError, match="--overwrite"):
        write_repository(art, tmp_path / "ort")


def test_bls_model_reads_the_copied_manifest(make_toy, tmp_path, monkeypatch):
    """The ``restyle`` model file as Triton's Python backend loads it (``triton_python_backend_utils`` stubbed, each
    BLS call answered by the ort backend): the manifest is copied without its engine records and read back through
    ``restyle_rt.artifacts.read_manifest``; the loop matches the Inverter's. (Needs no PyTriton: main lane.)"""
    import importlib.util
    import types

    from restyle_rt import artifacts
    from restyle_rt.runtime.backends.ort import OrtBackend

    art, _ = make_toy("bls")
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["engines"] = [
        {"graph": "encoder", "precision": "fp16", "file": "engines/encoder.fp16.engine", "trt_flavour": "tensorrt-rtx"}
    ]
    (art / "manifest.json").write_text(json.dumps(manifest))
    write_repository(art, tmp_path / "r", RepoConfig(graphs="python"))
    vdir = tmp_path / "r" / "restyle" / "1"
    copied = json.loads((vdir / "artifacts" / "manifest.json").read_text())
    assert copied == {k: v for k, v in manifest.items() if k != "engines"}
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    spec = importlib.util.spec_from_file_location("restyle_bls_model_under_test", vdir / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ort = OrtBackend(artifacts.load(art), threads=1)
    monkeypatch.setattr(
        mod,
        "_call",
        lambda model, inputs, outputs: (
            [ort.encode(**inputs)] if model == "encoder" else list(ort.synthesize(inputs["latent"]))
        ),
    )
    model = mod.TritonPythonModel()
    model.initialize({"model_config": json.dumps({"input": [{"name": "images"}], "parameters": {}})})
    loaded = artifacts.load(art)
    assert model.inverter.artifacts.manifest == artifacts.read_manifest(vdir / "artifacts")
    assert (model.inverter.spec, model.inverter.profile) == (loaded.spec, loaded.profile)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, *loaded.spec.input_hw)).astype(np.float32)
    got = model._invert(x, 2, False, None)
    with Inverter(loaded, ort) as inv:
        want = inv.invert(x, n_iters=2)
    np.testing.assert_array_equal(got.latents, want.latents)


def _tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_overwrite_is_atomic(toy, tmp_path, monkeypatch):
    """--overwrite writes beside the old repository and swaps it in: a failure mid-write leaves the old one whole.
    (Needs no PyTriton: runs in the main lane too.)"""
    from restyle_rt.serve import repo as repo_mod

    write_repository(toy[0], tmp_path / "r", RepoConfig(graphs="python", instances=2))
    before = _tree(tmp_path / "r")

    def fail(*a, **k):  # after both graphs were written into the new tree
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(repo_mod, "_write_restyle", fail)
    with pytest.raises(OSError, match="No space left"):
        write_repository(toy[0], tmp_path / "r", RepoConfig(graphs="python", instances=3), overwrite=True)
    assert _tree(tmp_path / "r") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no staging directory left beside it
    monkeypatch.undo()
    write_repository(toy[0], tmp_path / "r", RepoConfig(graphs="python", instances=3), overwrite=True)
    assert "count: 3" in (tmp_path / "r" / "encoder" / "config.pbtxt").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_configs_parse(toy, tmp_path):
    write_repository(toy[0], tmp_path / "ort", RepoConfig(graphs="auto", instances=2))
    enc = _parse_config(tmp_path / "ort" / "encoder" / "config.pbtxt")
    assert enc.platform == "onnxruntime_onnx" and enc.max_batch_size == 8
    assert [i.name for i in enc.input] == ["image", "feedback", "latent"] and list(enc.input[2].dims) == [4, 512]
    assert enc.instance_group[0].count == 2
    bls = _parse_config(tmp_path / "ort" / "restyle" / "config.pbtxt")
    policy = bls.dynamic_batching.default_queue_policy
    assert bls.backend == "python" and policy.max_queue_size == 64 and policy.default_timeout_microseconds == 30_000_000
    assert {i.name: i.optional for i in bls.input}["image_bytes"] is True
    from tritonclient.grpc import model_config_pb2 as pb

    types = {o.name: o.data_type for o in bls.output}
    assert types["image"] == pb.TYPE_UINT8 and types["latents"] == pb.TYPE_FP32
    assert {i.name: i.data_type for i in bls.input}["image_bytes"] == pb.TYPE_STRING
    assert list(bls.dynamic_batching.preferred_batch_size) == [8]  # profile (1, 1, 8): opt 1 is not preferred


@pytest.mark.parametrize("graphs", ["onnxruntime_onnx", "python"])
def test_warmup_and_image_format_in_config(toy, tmp_path, graphs):
    pb = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] not installed")

    write_repository(toy[0], tmp_path / "r", RepoConfig(graphs=graphs, image_format="png"))
    for graph, dims in (
        ("encoder", {"image": [3, 16, 16], "feedback": [3, 16, 16], "latent": [4, 512]}),
        ("synthesis", {"latent": [4, 512]}),
    ):
        (warm,) = _parse_config(tmp_path / "r" / graph / "config.pbtxt").model_warmup
        assert warm.batch_size == 1 and {k: list(v.dims) for k, v in warm.inputs.items()} == dims
        assert all(v.zero_data and v.data_type == pb.TYPE_FP32 for v in warm.inputs.values())
    bls = _parse_config(tmp_path / "r" / "restyle" / "config.pbtxt")
    assert not bls.model_warmup  # a BLS warm-up would call the graphs while the server loads: refused there
    assert bls.parameters["image_format"].string_value == "png"
    types = {o.name: o.data_type for o in bls.output}
    assert types["image_encoded"] == pb.TYPE_STRING and types["step_images_encoded"] == pb.TYPE_STRING
    assert {i.name: i.data_type for i in bls.input}["image_format"] == pb.TYPE_STRING
    write_repository(toy[0], tmp_path / "cold", RepoConfig(warmup=False))
    assert not _parse_config(tmp_path / "cold" / "encoder" / "config.pbtxt").model_warmup
    with pytest.raises(InputError, match="image format"):
        RepoConfig(image_format="gif")


def test_graph_models_warm_up_at_load(repo_server):
    log = repo_server.log.read_text(errors="replace")
    for graph in ("encoder", "synthesis"):
        assert f"model '{graph}' instance {graph}_0_0 is running warmup sample 'zeros'" in log, graph


def test_tensorrt_plan_config_is_validated_not_run(make_toy, tmp_path):
    art, _ = make_toy("withengines")
    (art / "engines").mkdir()
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["engines"] = []
    for g in ("encoder", "synthesis"):  # stand-in engine records: the config is checked, the bytes never loaded
        (art / "engines" / f"{g}.fp16.engine").write_bytes(b"not a real plan")
        manifest["engines"].append(
            {"graph": g, "precision": "fp16", "file": f"engines/{g}.fp16.engine", "trt_flavour": "tensorrt"}
        )
    (art / "manifest.json").write_text(json.dumps(manifest))
    repo = write_repository(art, tmp_path / "repo")
    assert repo.platforms["synthesis"] == "tensorrt_plan"
    syn = _parse_config(tmp_path / "repo" / "synthesis" / "config.pbtxt")
    assert syn.platform == "tensorrt_plan" and syn.instance_group[0].kind == syn.instance_group[0].KIND_GPU
    assert (tmp_path / "repo" / "synthesis" / "1" / "model.plan").read_bytes() == b"not a real plan"


class Tritonserver:
    """The PyTriton wheel's tritonserver on a model repository, loopback only, in its own session."""

    def __init__(self, repo: Path, work: Path, *extra: str):
        import pytriton
        from pytriton.utils.distribution import get_libs_path

        dist = Path(pytriton.__file__).parent / "tritonserver"
        backends = work / "backends" / "python"
        backends.mkdir(parents=True)
        for f in ("libtriton_python.so", "triton_python_backend_utils.py"):
            os.symlink(dist / "backends" / "python" / f, backends / f)
        stub = (
            dist
            / "python_backend_stubs"
            / f"{sys.version_info[0]}.{sys.version_info[1]}"
            / "triton_python_backend_stub"
        )
        shutil.copy(stub, backends / "triton_python_backend_stub")
        self.http, grpc, metrics = free_ports(3)
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = ":".join(
            p for p in (sysconfig.get_config_var("LIBDIR"), str(get_libs_path()), env.get("LD_LIBRARY_PATH", "")) if p
        )
        env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # the stub finds this venv's packages
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        cmd = [
            str(dist / "bin" / "tritonserver"),
            f"--model-repository={repo}",
            f"--backend-directory={work}/backends",
            "--http-address=127.0.0.1",
            f"--http-port={self.http}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={grpc}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={metrics}",
            "--exit-timeout-secs=10",
            f"--backend-config=python,shm-region-prefix-name=restyle{os.getpid()}_",
            *extra,
        ]
        self.log = work / "tritonserver.log"
        self._f = open(self.log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.url = f"127.0.0.1:{self.http}"

    def wait_ready(self):
        import tritonclient.http as hc

        client, t0 = hc.InferenceServerClient(self.url), time.monotonic()
        try:
            while time.monotonic() - t0 < START_TIMEOUT_S:
                if self.proc.poll() is not None:
                    pytest.fail(f"tritonserver exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
                try:
                    if client.is_server_ready():
                        return
                except Exception:
                    pass
                time.sleep(0.25)
        finally:
            client.close()
        pytest.fail(f"tritonserver not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self._f.close()


@pytest.fixture(scope="module")
def repo_server(toy, tmp_path_factory):
    why = serve_available()
    if why:
        pytest.skip(why)
    work = tmp_path_factory.mktemp("triton-repo")
    write_repository(toy[0], work / "models", RepoConfig(graphs="python", max_queue_delay_us=100000))
    srv = Tritonserver(work / "models", work, "--log-verbose=1")  # verbose: the log says when warm-ups run
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def test_bls_repository_runs_and_matches_inverter(repo_server, toy):
    import tritonclient.http as hc
    from tritonclient.utils import InferenceServerException

    blobs = [_png(k) for k in range(4)]
    with Inverter.load(toy[0], backend="ort", threads=1) as inv:
        ref = inv.invert([_decode(b) for b in blobs], n_iters=3, return_steps=True)
    client = hc.InferenceServerClient(repo_server.url, concurrency=6)
    try:
        assert all(client.is_model_ready(m) for m in ("encoder", "synthesis", "restyle"))
        futs = [client.async_infer("restyle", _inputs(blobs=[b], return_steps=("BOOL", True))) for b in blobs]
        futs.append(client.async_infer("restyle", _inputs(blobs=[b"garbage"])))
        futs.append(client.async_infer("restyle", _inputs(blobs=[blobs[0]], image_format=("BYTES", b"jpeg"))))
        res = []
        for f in futs:
            try:
                res.append(f.get_result(timeout=60))
            except InferenceServerException as e:
                res.append(e)
    finally:
        client.close()
    good = res[:4]
    assert not any(isinstance(r, Exception) for r in good), good
    lat = np.concatenate([r.as_numpy("latents") for r in good])  # [4, S, 512]
    assert_batch_parity(lat, ref.latents)
    steps = np.concatenate([r.as_numpy("step_latents") for r in good])  # [4, T, S, 512]
    assert_batch_parity(steps[:, 0], ref.step_latents[0])
    assert isinstance(res[4], InferenceServerException) and "not a readable image" in res[4].message()
    assert res[4].status() == "400"
    jpeg = res[5].as_numpy("image_encoded")  # BYTES out of the BLS model
    assert jpeg.shape == (1, 1) and jpeg[0, 0][:3] == b"\xff\xd8\xff" and res[5].as_numpy("image") is None


def test_cli(toy, tmp_path, capsys):
    from restyle_rt.cli import main

    assert main(["triton-repo", str(toy[0]), "--out", str(tmp_path / "r"), "--graphs", "python"]) == 0
    out = capsys.readouterr().out
    assert "encoder    python" in out and "tritonserver --model-repository=" in out
    assert (tmp_path / "r" / "encoder" / "1" / "model.py").is_file()
    assert main(["triton-repo", str(toy[0]), "--out", str(tmp_path / "r")]) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
