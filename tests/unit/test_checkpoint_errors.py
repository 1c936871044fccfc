"""Bad checkpoints: each gets one clear CheckpointError, and an export from it leaves no artifacts dir."""

import collections

import pytest
import torch

from restyle_rt.errors import CheckpointError, ParityError
from restyle_rt.export import export_artifacts, load_checkpoint
from restyle_rt.export.fixtures import make_checkpoint

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A small valid checkpoint (pSp ResNet34, 16 px, S=6) as a dict, saved once on cuda:0-tagged storages."""
    d = tmp_path_factory.mktemp("ckpt")
    path = d / "good.pt"
    ckpt = make_checkpoint(path, "ResNetBackboneEncoder", "church_encode", 16, seed=3, device_tag="cuda:0")
    return path, ckpt


def _save(tmp_path, obj, name="bad.pt"):
    p = tmp_path / name
    torch.save(obj, p)
    return p


def _raises(path, *fragments):
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    for f in fragments:
        assert f in str(e.value), str(e.value)
    return str(e.value)


def test_cuda_tagged_checkpoint_loads_on_cpu(good):
    path, _ = good
    if not torch.cuda.is_available():  # what a naive loader hits on a CPU-only machine
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    ck = load_checkpoint(path)
    assert ck.spec.n_styles == 6 and ck.spec.backbone == "resnet34" and not ck.spec.is_e4e


def test_extra_top_level_keys_are_ignored(tmp_path, good):
    _, ckpt = good
    obj = dict(
        ckpt,
        global_step=3,
        optimizer={"state": {}, "param_groups": []},
        best_val_loss=0.1,
        discriminator_state_dict={"w": torch.zeros(2)},
    )
    assert load_checkpoint(_save(tmp_path, obj)).spec.output_size == 16


@pytest.mark.parametrize(
    "case,fragments",
    [
        ("missing", ["1 missing", "encoder: ", "body.0.conv1.weight", "decoder: 1 missing", "to_rgb1.bias"]),
        ("unexpected", ["encoder: 1 unexpected: extra.weight"]),
        ("misshaped", ["mis-shaped", "styles.0.linear.weight [512, 256] (expected [512, 512])"]),
    ],
)
def test_key_problems_are_listed(tmp_path, good, case, fragments):
    _, ckpt = good
    sd = collections.OrderedDict(ckpt["state_dict"])
    if case == "missing":
        del sd["encoder.body.0.conv1.weight"], sd["decoder.to_rgb1.bias"]
    elif case == "unexpected":
        sd["encoder.extra.weight"] = torch.zeros(3)
    else:
        sd["encoder.styles.0.linear.weight"] = torch.zeros(512, 256)
    _raises(_save(tmp_path, dict(ckpt, state_dict=sd)), "does not match ResNetBackboneEncoder @ 16", *fragments)


def test_wrong_architecture_in_opts_is_caught_by_shapes(tmp_path, good):
    _, ckpt = good
    obj = dict(ckpt, opts=dict(ckpt["opts"], encoder_type="BackboneEncoder"))  # IR-SE50 keys expected
    _raises(_save(tmp_path, obj), "does not match BackboneEncoder", "missing", "unexpected")


@pytest.mark.parametrize(
    "make,fragments",
    [
        (
            lambda c: {"g_ema": {"w": torch.zeros(1)}, "latent_avg": torch.zeros(512)},
            ["StyleGAN2 generator checkpoint", "expected keys state_dict, opts, latent_avg"],
        ),
        (lambda c: {"model": torch.zeros(1)}, ["not a ReStyle checkpoint: missing state_dict, opts"]),
        (lambda c: [1, 2, 3], ["holds a list"]),
        (lambda c: {k: v for k, v in c.items() if k != "latent_avg"}, ["no latent_avg"]),
        (lambda c: dict(c, latent_avg=torch.zeros(5, 512)), ["latent_avg has shape [5, 512]", "[6, 512] or [512]"]),
        (lambda c: dict(c, opts=dict(c["opts"], input_nc=3)), ["input_nc=3", "6 channels"]),
        (
            lambda c: dict(c, opts=dict(c["opts"], encoder_type="GradualStyleEncoder")),
            ["does not match GradualStyleEncoder", "unexpected: conv1.weight"],
        ),
        (lambda c: dict(c, opts=dict(c["opts"], encoder_type="Nope")), ["'Nope' is not supported", "known types"]),
        (
            lambda c: dict(c, opts={k: v for k, v in c["opts"].items() if k != "output_size"}),
            ["no 'output_size'", "never guessed"],
        ),
    ],
)
def test_not_a_restyle_checkpoint(tmp_path, good, make, fragments):
    _raises(_save(tmp_path, make(good[1])), *fragments)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_arbitrary_pickles_are_refused(tmp_path):
    p = _save(tmp_path, {"state_dict": {}, "opts": Evil()})
    _raises(p, "refused to unpickle", "weights_only=True", "Unsupported global: GLOBAL print")


def test_truncated_empty_and_garbage_files(tmp_path, good):
    data = good[0].read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 3])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("not a checkpoint\n")
    _raises(tmp_path / "trunc.pt", "not a readable PyTorch checkpoint", "truncated")
    _raises(tmp_path / "empty.pt", "empty file")
    _raises(tmp_path / "text.pt", "not a PyTorch checkpoint (starts with b'not ')")
    _raises(tmp_path / "missing.pt", "no such file")


def test_failed_export_leaves_nothing(tmp_path, good, monkeypatch):
    out = tmp_path / "art"
    (tmp_path / "text.pt").write_text("nope")
    with pytest.raises(CheckpointError):
        export_artifacts(tmp_path / "text.pt", out, progress=False)
    assert not out.exists()
    # a parity failure (tolerance forced to zero) also leaves no directory and no staging leftovers
    from restyle_rt import parity

    monkeypatch.setitem(parity.TOLERANCES, ("ort", "fp32", "image"), parity.Tolerance(0.0, 1e9))
    with pytest.raises(ParityError, match="ort fp32 parity failed: image"):
        export_artifacts(good[0], out, progress=False)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["text.pt"]
