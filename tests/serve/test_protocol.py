"""The ``restyle`` model's request handling without a server: grouping, per-request errors, parity with invert."""

from __future__ import annotations

import io
import os
import sysconfig

import numpy as np
import pytest

from restyle_rt import Inverter
from restyle_rt.serve import env, protocol

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def inv(toy):
    with Inverter.load(toy[0], backend="ort") as inverter:
        yield inverter


def _png(seed: int, size=(20, 28)) -> bytes:
    from PIL import Image

    a = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    a = (a * (0.3 + 0.1 * seed)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _invert(inv):
    calls = []

    def run(x, n, steps, tau):
        calls.append((x.shape[0], n, steps, tau))
        return inv.invert(x, n_iters=n, return_steps=steps, early_exit=tau)

    return run, calls


def test_groups_and_parity(inv):
    hw = inv.spec.input_hw
    x = inv.preprocess([np.random.default_rng(9).integers(0, 256, (30, 30, 3), dtype=np.uint8)])  # [1, 3, H, W]
    reqs = [
        {"image_bytes": np.array([[_png(1)], [_png(2)]], dtype=object), "iters": np.array([[3], [3]], np.int32)},
        {"images": x, "iters": np.array([[2]], np.int32), "return_steps": np.array([[True]])},
        {"image_bytes": np.array([[_png(3)]], dtype=object), "iters": np.array([[3]], np.int32)},
    ]
    run, calls = _invert(inv)
    out = protocol.run_requests(run, reqs, hw)
    assert sorted(calls) == sorted([(3, 3, False, None), (1, 2, True, None)])  # one loop per argument group
    ref = inv.invert([protocol.io.decode_image(_png(k)) for k in (1, 2, 3)], n_iters=3)
    # the same batch composition as the reference, so the same numbers
    np.testing.assert_array_equal(np.concatenate([out[0]["latents"], out[2]["latents"]]), ref.latents)
    assert out[0]["image"].dtype == np.uint8 and out[0]["image"].shape == (2, *inv.spec.image_hw, 3)
    assert out[0]["steps_used"].tolist() == [[3], [3]]
    ref2 = inv.invert(x, n_iters=2, return_steps=True)
    assert out[1]["step_latents"].shape == (1, 2, inv.spec.n_styles, 512)
    np.testing.assert_array_equal(out[1]["step_latents"][:, 1], ref2.latents)
    assert "step_latents" not in out[0]


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"image_bytes": np.array([[b"not an image"]], dtype=object)}, "not a readable image"),
        ({"image_bytes": np.array([[b""]], dtype=object)}, "empty image"),
        ({}, "exactly one of"),
        ({"image_bytes": np.array([[b"x"]], dtype=object), "images": np.zeros((1, 3, 16, 16), np.float32)}, "both"),
        ({"images": np.zeros((1, 3, 8, 8), np.float32)}, "expected float32"),
        ({"images": np.full((1, 3, 16, 16), np.nan, np.float32)}, "NaN"),
        ({"images": np.zeros((1, 3, 16, 16), np.float32), "iters": np.array([[0]], np.int32)}, "positive integer"),
        ({"images": np.zeros((1, 3, 16, 16), np.float32), "iters": np.array([[21]], np.int32)}, "expected 1..20"),
        ({"images": np.zeros((2, 3, 16, 16), np.float32), "iters": np.array([[2], [3]], np.int32)}, "same value"),
        ({"images": np.zeros((1, 3, 16, 16), np.float32), "early_exit": np.array([[-1.0]], np.float32)}, "early_exit"),
    ],
)
def test_bad_request_alone_fails(inv, bad, match):
    good = {"images": np.zeros((1, 3, 16, 16), np.float32), "iters": np.array([[2]], np.int32)}
    run, calls = _invert(inv)
    out = protocol.run_requests(run, [good, bad, good], inv.spec.input_hw)
    assert isinstance(out[1], protocol.RequestError) and match in str(out[1])
    assert out[0]["latents"].shape == (1, 4, 512) and out[2]["latents"].shape == (1, 4, 512)
    assert calls == [(2, 2, False, None)]


def test_early_exit_per_request(inv):
    x = np.zeros((2, 3, 16, 16), np.float32)
    reqs = [
        {"images": x, "iters": np.array([[4], [4]], np.int32), "early_exit": np.array([[1e9], [1e9]], np.float32)},
        {"images": x[:1], "iters": np.array([[4]], np.int32)},
    ]
    run, calls = _invert(inv)
    out = protocol.run_requests(run, reqs, inv.spec.input_hw)
    assert out[0]["steps_used"].tolist() == [[1], [1]] and out[1]["steps_used"].tolist() == [[4]]
    assert sorted(c[3] is None for c in calls) == [False, True]  # two loop groups: with and without early exit


def _decode_png(b: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))


def test_encoded_images_instead_of_raw(inv):
    x = inv.preprocess([np.random.default_rng(k).integers(0, 256, (30, 30, 3), dtype=np.uint8) for k in range(2)])
    steps = np.array([[True], [True]])
    reqs = [
        {"images": x, "iters": np.array([[2], [2]], np.int32), "return_steps": steps},  # raw: as before
        {
            "images": x,
            "iters": np.array([[2], [2]], np.int32),
            "return_steps": steps,
            "image_format": np.array([[b"png"], [b"png"]], dtype=object),
        },
        {"images": x[:1], "iters": np.array([[2]], np.int32), "image_format": np.array([[b"JPG"]], dtype=object)},
    ]
    run, calls = _invert(inv)
    raw, png, jpg = protocol.run_requests(run, reqs, inv.spec.input_hw)
    assert calls == [(4, 2, True, None), (1, 2, False, None)]  # the format does not split a loop group
    assert set(raw) == {"latents", "image", "steps_used", "step_latents", "step_images"}  # unchanged contract
    assert set(png) == {"latents", "steps_used", "step_latents", "image_encoded", "step_images_encoded"}
    assert png["image_encoded"].shape == (2, 1) and png["step_images_encoded"].shape == (2, 2)
    for i in range(2):  # PNG is lossless: the same pixels as the raw answer
        np.testing.assert_array_equal(_decode_png(png["image_encoded"][i, 0]), raw["image"][i])
        for t in range(2):
            np.testing.assert_array_equal(_decode_png(png["step_images_encoded"][i, t]), raw["step_images"][i, t])
    np.testing.assert_array_equal(png["latents"], raw["latents"])
    blob = jpg["image_encoded"][0, 0]
    assert blob[:3] == b"\xff\xd8\xff" and "image" not in jpg
    assert blob == protocol.encode_image(raw["image"][0], "jpeg")  # the raw answer's pixels, JPEG-encoded
    assert np.abs(_decode_png(blob).astype(int) - raw["image"][0]).mean() < 20  # lossy (noise image, 4:2:0)


def test_server_default_format_and_bad_format(inv):
    good = {"images": np.zeros((1, 3, 16, 16), np.float32), "iters": np.array([[1]], np.int32)}
    bad = dict(good, image_format=np.array([[b"webp"]], dtype=object))
    raw_asked = dict(good, image_format=np.array([[b"raw"]], dtype=object))
    run, _ = _invert(inv)
    out = protocol.run_requests(run, [good, bad, raw_asked], inv.spec.input_hw, default_format="png")
    assert "image_encoded" in out[0] and "image" not in out[0]  # the server's default
    assert isinstance(out[1], protocol.RequestError) and "expected one of raw, png, jpeg" in str(out[1])
    assert "image" in out[2] and "image_encoded" not in out[2]  # a request overrides the default
    mixed = dict(
        good,
        images=np.zeros((2, 3, 16, 16), np.float32),
        iters=np.array([[1], [1]], np.int32),
        image_format=np.array([[b"png"], [b"raw"]], dtype=object),
    )
    assert "same value" in str(protocol.run_requests(run, [mixed], inv.spec.input_hw)[0])


def test_io_table_declares_the_encoded_tensors(inv):
    ins, outs = protocol.io_table(inv.spec)
    assert ("image_format", np.bytes_, (1,), True) in ins
    assert ("image_encoded", np.bytes_, (1,), False) in outs
    assert ("step_images_encoded", np.bytes_, (-1,), False) in outs
    assert len({n for n, *_ in ins + outs}) == len(ins) + len(outs)  # no name is both an input and an output
    from restyle_rt.cli import serve as cli

    assert cli.IMAGE_FORMATS == protocol.IMAGE_FORMATS  # the CLI's copy (registration does not import numpy)


def test_libpython_first_on_ld_library_path(monkeypatch):
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/x:/opt/y")
    env.fix_libpython_path()
    parts = os.environ["LD_LIBRARY_PATH"].split(":")
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        assert parts == [sysconfig.get_config_var("LIBDIR"), "/opt/x", "/opt/y"]
    else:  # a static interpreter has no libpython to point at
        assert parts == ["/opt/x", "/opt/y"]


def test_preferred_batch_sizes():
    from restyle_rt.spec import BatchProfile

    assert protocol.preferred_batch_sizes(BatchProfile(1, 1, 8)) == [8]
    assert protocol.preferred_batch_sizes(BatchProfile(1, 4, 8)) == [4, 8]
    assert protocol.preferred_batch_sizes(BatchProfile(1, 1, 1)) == [1]


def test_proxy_patch_is_anchored():
    src = "x = 1\n" + env._ANCHOR + "        return 1\n"
    patched = env.patch_proxy_source(src)
    assert env.ERROR_KEY in patched and patched.count("def _wrap_response") == 1
    compile(patched, "model.py", "exec")
    assert env.patch_proxy_source(patched) == patched
    with pytest.raises(env.BackendUnavailable, match="0.7"):
        env.patch_proxy_source("def _wrap_response(response):\n    pass\n")


def test_check_refuses_numpy2_or_missing_pytriton():
    try:
        import pytriton  # noqa: F401
    except ImportError:
        with pytest.raises(env.BackendUnavailable, match="nvidia-pytriton"):
            env.check()
        return
    if int(np.__version__.split(".")[0]) >= 2:
        with pytest.raises(env.BackendUnavailable, match="numpy<2"):
            env.check()
    else:
        env.check()


def test_cli_registration_is_light_and_in_step():
    import json
    import subprocess
    import sys

    code = (
        "import argparse, json, sys; sys.modules['torch'] = None\n"
        "from restyle_rt.cli import serve as cli\n"
        "p = argparse.ArgumentParser(); cli.register(p.add_subparsers())\n"
        "a = p.parse_args(['serve', 'A'])\n"
        "heavy = [m for m in ('numpy', 'onnxruntime', 'cv2', 'pytriton') if sys.modules.get(m) is not None]\n"
        "print(json.dumps({'heavy': heavy, 'max_iters': a.max_iters, 'host': a.host}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"heavy": [], "max_iters": protocol.DEFAULT_MAX_ITERS, "host": "127.0.0.1"}


def test_serve_cli_without_the_extra_says_how_to_install(toy, capsys):
    if not _needs_extra():
        pytest.skip("the [serve] extra is installed here")
    from restyle_rt.cli import main
    from restyle_rt.errors import EXIT_BACKEND

    assert main(["serve", str(toy[0])]) == EXIT_BACKEND
    err = capsys.readouterr().err
    assert "restyle-rt[serve]" in err and "numpy<2" in err


def _needs_extra() -> bool:
    try:
        import pytriton  # noqa: F401
    except ImportError:
        return True
    return int(np.__version__.split(".")[0]) >= 2
