"""Loop bookkeeping the parity tests do not look at: result dtypes and defaults, stage timings, chunk joining.

Written to kill mutants that survived the scoped mutmut run (docs/mutation.md).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from restyle_rt import artifacts
from restyle_rt.runtime.backend import Backend, LoopResult
from restyle_rt.runtime.loop import concat_results, host_loop

pytestmark = pytest.mark.unit
ENC_S, SYN_S = 0.02, 0.01


class SleepyBackend(Backend):
    """Adds 0.1 to the latent; sleeps a known time per call so stage timings have a floor."""

    name = "sleepy-test"

    @classmethod
    def available(cls):
        return True, ""

    def encode(self, image, feedback, latent):
        time.sleep(ENC_S)
        return latent + 0.1

    def synthesize(self, latent):
        time.sleep(SYN_S)
        b = latent.shape[0]
        img = np.broadcast_to(latent[:, :1, :1, None], (b, 3, *self.artifacts.spec.image_hw)).astype(np.float32)
        return img, np.zeros((b, 3, *self.artifacts.spec.input_hw), np.float32)


@pytest.fixture
def backend(toy):
    return SleepyBackend(artifacts.load(toy[0]))


def _x(be, n=2):
    return np.zeros((n, 3, *be.artifacts.spec.input_hw), np.float32)


def test_result_dtypes_and_default_no_steps(backend):
    res = host_loop(backend, _x(backend), 3)
    assert res.step_latents == [] and res.step_images == []  # per-step copies only when asked
    assert res.latents.dtype == res.images.dtype == np.float32
    assert res.steps_used.dtype == np.int64 and res.steps_used.tolist() == [3, 3]
    np.testing.assert_allclose(res.images[:, 0, 0, 0], backend.artifacts.latent_avg[0, 0] + 0.3, rtol=1e-6)


def test_stage_times_accumulate_over_steps(backend):
    n = 4
    res = host_loop(backend, _x(backend), n)
    st = res.stages
    assert n * ENC_S <= st["encoder"] < n * ENC_S + 5.0
    assert n * SYN_S <= st["synthesis"] < n * SYN_S + 5.0
    assert 0.0 <= st["copies"] < 5.0


def test_early_exited_images_keep_their_image(backend):
    """After the active set is compacted, finished images keep their last image (not NaN, not overwritten)."""
    x = _x(backend, 3)
    res = host_loop(backend, x, 4, early_exit=0.2)  # every update has RMS 0.1 < 0.2: all stop at step 1
    assert res.steps_used.tolist() == [1, 1, 1]
    np.testing.assert_allclose(res.images[:, 0, 0, 0], backend.artifacts.latent_avg[0, 0] + 0.1, rtol=1e-6)


def _part(b, val, steps=2):
    lat = np.full((b, 2, 512), val, np.float32)
    img = np.full((b, 3, 4, 4), val, np.float32)
    r = LoopResult(latents=lat, images=img, steps_used=np.full(b, steps))
    r.step_latents = [lat + t for t in range(steps)]
    r.step_images = [img + t for t in range(steps)]
    r.stages = {"encoder": 1.5, "synthesis": 0.5}
    return r


def test_concat_results_joins_chunks():
    one = _part(2, 1.0)
    assert concat_results([one]) is one
    out = concat_results([_part(2, 1.0), _part(1, 2.0)])
    assert out.latents[:, 0, 0].tolist() == [1, 1, 2] and out.images[:, 0, 0, 0].tolist() == [1, 1, 2]
    assert [s[:, 0, 0].tolist() for s in out.step_latents] == [[1, 1, 2], [2, 2, 3]]
    assert [s[:, 0, 0, 0].tolist() for s in out.step_images] == [[1, 1, 2], [2, 2, 3]]
    assert out.stages == {"encoder": 3.0, "synthesis": 1.0}


# --- run_in_chunks: the one batching rule (Inverter.invert, synthesize_all, bootstrap, the trt backend) ----------


def test_run_in_chunks_sizes_order_padding_and_trimming():
    """Chunks of profile.max rows in order; a ragged tail is padded to profile.min with its last row, and each
    result is trimmed back to the real rows."""
    from restyle_rt.runtime.loop import run_in_chunks
    from restyle_rt.spec import BatchProfile

    x = np.arange(11, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)  # [11, 3], row i == i
    seen, done = [], []

    def fn(chunk):
        seen.append(chunk[:, 0].tolist())
        return chunk * 10

    parts = run_in_chunks(BatchProfile(3, 4, 4), x, fn, progress=done.append)
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]  # chunk size profile.max; the tail (3) fits min 3
    assert done == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(parts), x * 10)  # order kept

    seen.clear()
    parts = run_in_chunks(BatchProfile(3, 4, 4), x[:9], fn)  # tail of 1 row, below min 3
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 8, 8]]  # padded with its last row
    assert [len(p) for p in parts] == [4, 4, 1]  # trimmed to the real rows
    np.testing.assert_array_equal(np.concatenate(parts), x[:9] * 10)


def test_run_in_chunks_trims_loop_results_and_tuples():
    from restyle_rt.runtime.loop import run_in_chunks, take_rows
    from restyle_rt.spec import BatchProfile

    x = np.zeros((5, 2, 512), np.float32)
    parts = run_in_chunks(BatchProfile(4, 4, 4), x, lambda c: _part(len(c), 1.0))  # 4 + 1 padded to 4
    assert [len(p.latents) for p in parts] == [4, 1]
    tail = parts[1]
    assert [len(a) for a in tail.step_latents + tail.step_images] == [1] * 4
    assert len(tail.steps_used) == len(tail.images) == 1 and tail.stages == {"encoder": 1.5, "synthesis": 0.5}
    assert len(concat_results(parts).latents) == 5
    pair = run_in_chunks(BatchProfile(2, 2, 2), x[:1], lambda c: [(c, c[:, :1])])[0]
    assert isinstance(pair, list) and [a.shape[0] for a in pair[0]] == [1, 1]
    with pytest.raises(TypeError, match="cannot trim a dict"):
        take_rows({"a": x}, 1)


def test_inverter_synthesize_chunks_and_matches_one_call(toy):
    """Inverter.synthesize: profile-sized chunks (toy profile [1, 1, 8]: 8 + 3), the same images as single calls,
    a copy the backend does not reuse."""
    from restyle_rt import Inverter

    lat = np.random.default_rng(0).normal(size=(11, artifacts.load(toy[0]).spec.n_styles, 512)).astype(np.float32)
    done = []
    with Inverter.load(toy[0], backend="ort") as inv:
        imgs = inv.synthesize(lat, progress=done.append)
        one = np.array(inv.backend.synthesize(lat[9:10])[0])
        inv.backend.synthesize(lat[:1])  # would overwrite a view of the backend's buffers
    assert imgs.shape == (11, 3, *inv.spec.image_hw) and done == [8, 3]
    np.testing.assert_allclose(imgs[9:10], one, rtol=1e-5, atol=1e-6)
