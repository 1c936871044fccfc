"""``restyle-rt serve`` end to end on loopback: concurrency vs Inverter, batching, bad requests, overload, drain.

Bounded: two servers on the toy artifacts, a few dozen requests, every wait has a deadline, servers always stopped.
"""

from __future__ import annotations

import io
import json
import re
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from restyle_rt import Inverter
from restyle_rt.parity import compare, tolerance

pytestmark = pytest.mark.unit


def _png(seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    a = (rng.integers(0, 256, (20, 28, 3), dtype=np.uint8) * rng.uniform(0.2, 1.0)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _inputs(blobs=None, images=None, iters=3, **extra):
    import tritonclient.http as hc

    ins = []
    if blobs is not None:
        i = hc.InferInput("image_bytes", [len(blobs), 1], "BYTES")
        i.set_data_from_numpy(np.array([[b] for b in blobs], dtype=object))
        ins.append(i)
        n = len(blobs)
    if images is not None:
        i = hc.InferInput("images", list(images.shape), "FP32" if images.dtype == np.float32 else "FP64")
        i.set_data_from_numpy(images)
        ins.append(i)
        n = images.shape[0]
    it = hc.InferInput("iters", [n, 1], "INT32")
    it.set_data_from_numpy(np.full((n, 1), iters, np.int32))
    ins.append(it)
    for name, (dtype, value) in extra.items():
        t = hc.InferInput(name, [n, 1], dtype)
        t.set_data_from_numpy(np.full((n, 1), value, {"BOOL": np.bool_, "FP32": np.float32, "BYTES": object}[dtype]))
        ins.append(t)
    return ins


def _metric(url_port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{url_port}/metrics", timeout=10).read().decode()
    m = re.search(rf'^{name}{{model="restyle",version="1"}} (\S+)$', text, re.M)
    assert m, f"{name} not in metrics"
    return float(m.group(1))


def assert_batch_parity(actual, reference, output="latent"):
    """Served vs in-process: only batch composition differs (parity table: ort-batch)."""
    rep = compare(actual, reference)
    assert tolerance("ort-batch", "fp32", output).check(rep) is None, rep


def _gather(futures, timeout=60):
    out = []
    for f in futures:
        try:
            out.append(f.get_result(timeout=timeout))
        except Exception as e:  # InferenceServerException: kept to be checked
            out.append(e)
    return out


def test_health_config_and_metrics(servers, toy):
    s = servers["main"]
    base = f"http://{s.url}"
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/restyle/ready"):
        assert urllib.request.urlopen(base + path, timeout=10).status == 200
    cfg = json.load(urllib.request.urlopen(base + "/v2/models/restyle/config", timeout=10))
    assert cfg["max_batch_size"] == 8  # the toy artifacts' profile max
    assert cfg["dynamic_batching"]["preferred_batch_size"] == [8]
    assert cfg["dynamic_batching"]["default_queue_policy"]["max_queue_size"] == 64
    assert {t["name"] for t in cfg["input"]} == {
        "image_bytes",
        "images",
        "iters",
        "early_exit",
        "return_steps",
        "image_format",
    }
    assert _metric(s.metrics, "nv_inference_exec_count") >= 0


def test_concurrent_requests_match_inverter_and_batch(servers, toy):
    import tritonclient.http as hc

    s = servers["main"]
    blobs = [_png(k) for k in range(8)]
    with Inverter.load(toy[0], backend="ort", threads=1) as inv:
        ref = inv.invert([_decode(b) for b in blobs], n_iters=3)
        arr = inv.preprocess([_decode(_png(100 + k)) for k in range(4)])  # [4, 3, H, W]
        ref_arr = inv.invert(arr, n_iters=3, return_steps=True)
    execs0, reqs0 = _metric(s.metrics, "nv_inference_exec_count"), _metric(s.metrics, "nv_inference_request_success")
    client = hc.InferenceServerClient(s.url, concurrency=12)
    try:
        futs = [client.async_infer("restyle", _inputs(blobs=[b])) for b in blobs]
        futs += [
            client.async_infer("restyle", _inputs(images=arr[k : k + 1], return_steps=("BOOL", True))) for k in range(4)
        ]
        res = _gather(futs)
    finally:
        client.close()
    errors = [r for r in res if isinstance(r, Exception)]
    assert not errors, errors
    lat = np.concatenate([r.as_numpy("latents") for r in res[:8]])  # [8, S, 512]
    assert_batch_parity(lat, ref.latents)
    img = np.concatenate([r.as_numpy("image") for r in res[:8]])  # [8, h, w, 3] uint8
    ref_img = np.stack([_to_uint8(i) for i in ref.images])
    assert img.dtype == np.uint8 and np.abs(img.astype(int) - ref_img).max() <= 1  # tensor2im truncation
    steps = np.concatenate([r.as_numpy("step_latents") for r in res[8:]])  # [4, T, S, 512]
    assert steps.shape[1] == 3 and res[8].as_numpy("step_images").shape[1] == 3
    assert_batch_parity(steps[:, -1], ref_arr.latents)
    assert res[0].as_numpy("step_latents") is None  # only when asked
    execs = _metric(s.metrics, "nv_inference_exec_count") - execs0
    served = _metric(s.metrics, "nv_inference_request_success") - reqs0
    assert served == 12 and 1 <= execs < 12, f"{served} requests in {execs} executions: no dynamic batching"


def test_png_answer_over_http(servers, toy):
    """``image_format`` png: the same pixels as the raw answer, as PNG files, final and per step."""
    import tritonclient.http as hc
    from PIL import Image

    s = servers["main"]
    client = hc.InferenceServerClient(s.url)
    try:
        raw = client.infer("restyle", _inputs(blobs=[_png(7)], iters=2, return_steps=("BOOL", True)))
        png = client.infer(
            "restyle", _inputs(blobs=[_png(7)], iters=2, return_steps=("BOOL", True), image_format=("BYTES", b"png"))
        )
    finally:
        client.close()
    enc, steps = png.as_numpy("image_encoded"), png.as_numpy("step_images_encoded")
    assert enc.shape == (1, 1) and steps.shape == (1, 2) and png.as_numpy("image") is None
    decode = lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))  # noqa: E731
    np.testing.assert_array_equal(decode(enc[0, 0]), raw.as_numpy("image")[0])
    np.testing.assert_array_equal(decode(steps[0, 0]), raw.as_numpy("step_images")[0, 0])
    assert len(enc[0, 0]) < raw.as_numpy("image")[0].nbytes + 1024


def test_grpc_request(servers, toy):
    import tritonclient.grpc as gc

    s = servers["main"]
    blob = _png(5)
    inp = gc.InferInput("image_bytes", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[blob]], dtype=object))
    it = gc.InferInput("iters", [1, 1], "INT32")
    it.set_data_from_numpy(np.array([[2]], np.int32))
    client = gc.InferenceServerClient(f"127.0.0.1:{s.grpc}")
    try:
        r = client.infer("restyle", [inp, it], client_timeout=60)
    finally:
        client.close()
    with Inverter.load(toy[0], backend="ort", threads=1) as inv:
        ref = inv.invert([_decode(blob)], n_iters=2)
    assert_batch_parity(r.as_numpy("latents"), ref.latents)
    assert r.as_numpy("steps_used").tolist() == [[2]]


def test_bad_request_among_good(servers):
    import tritonclient.http as hc
    from tritonclient.utils import InferenceServerException

    s = servers["main"]
    client = hc.InferenceServerClient(s.url, concurrency=6)
    try:
        futs = [
            client.async_infer("restyle", _inputs(blobs=[_png(1)])),
            client.async_infer("restyle", _inputs(blobs=[b"\x89PNG truncated"])),
            client.async_infer("restyle", _inputs(blobs=[_png(2)], iters=99)),
            client.async_infer("restyle", _inputs(blobs=[_png(3)])),
        ]
        res = _gather(futs)
        with pytest.raises(InferenceServerException) as wrong_dtype:  # rejected by Triton before batching
            client.infer("restyle", _inputs(images=np.zeros((1, 3, 16, 16), np.float64)))
        with pytest.raises(InferenceServerException) as wrong_shape:
            client.infer("restyle", _inputs(images=np.zeros((1, 3, 8, 8), np.float32)))
    finally:
        client.close()
    assert res[0].as_numpy("latents").shape == (1, 4, 512) and res[3].as_numpy("latents").shape == (1, 4, 512)
    assert isinstance(res[1], InferenceServerException) and "not a readable image" in res[1].message()
    assert isinstance(res[2], InferenceServerException) and "expected 1..20, got 99" in res[2].message()
    assert res[1].status() == "400" and res[2].status() == "400"
    assert "FP64" in wrong_dtype.value.message() or "data-type" in wrong_dtype.value.message()
    assert wrong_dtype.value.status() == "400" and wrong_shape.value.status() == "400"
    assert "shape" in wrong_shape.value.message()


def test_overload_and_timeout_rejected(servers):
    import tritonclient.http as hc
    from tritonclient.utils import InferenceServerException

    s = servers["tight"]  # queue of 2; the batcher holds requests for 1.5 s waiting for a batch of 8
    client = hc.InferenceServerClient(s.url, concurrency=8)
    try:
        t0 = time.monotonic()
        futs = [client.async_infer("restyle", _inputs(blobs=[_png(k)])) for k in range(6)]
        res = _gather(futs)
        rejected = [r for r in res if isinstance(r, InferenceServerException)]
        assert 1 <= len(rejected) <= 4 and len(res) - len(rejected) >= 2, [str(r) for r in res]
        assert all("queue" in r.message().lower() for r in rejected), [r.message() for r in rejected]
        assert all(r.status() == "503" for r in rejected), [r.status() for r in rejected]  # UNAVAILABLE
        assert time.monotonic() - t0 < 20
        with pytest.raises(InferenceServerException, match="(?i)timeout"):  # 50 ms budget < the 1.5 s window
            client.infer("restyle", _inputs(blobs=[_png(9)]), timeout=50_000)
    finally:
        client.close()


def test_sigterm_drains_in_flight(servers):
    import tritonclient.http as hc

    s = servers["tight"]

    def one(k):  # blocking calls from real threads, so both are on the wire before SIGTERM
        client = hc.InferenceServerClient(s.url, network_timeout=60)
        try:
            return client.infer("restyle", _inputs(blobs=[_png(k)]))
        except Exception as e:
            return e
        finally:
            client.close()

    with ThreadPoolExecutor(2) as pool:
        futs = [pool.submit(one, k) for k in range(2)]
        time.sleep(0.7)  # both are queued, held by the 1.5 s batching window
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        res = [f.result(timeout=40) for f in futs]
    assert all(not isinstance(r, Exception) for r in res), res
    s.proc.wait(30)
    assert time.monotonic() - t0 < 25, "drain took longer than its bound"
    assert s.proc.returncode == 0, s.log_tail()


def _decode(b: bytes):
    from restyle_rt.runtime import io as rio

    return rio.decode_image(b)


def _to_uint8(img):
    from restyle_rt.runtime import io as rio

    return rio.to_uint8(img)
