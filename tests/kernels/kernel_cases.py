"""Shared cases of tests/kernels: the layer kinds, a random-input maker and the tolerances (imported by the tests)."""

import numpy as np

from restyle_rt import parity

# (name, kernel_size, upsample, demodulate, activate): the three layer kinds of the StyleGAN2 synthesis
# network.
LAYER_KINDS = [
    ("conv3x3", 3, False, True, True),
    ("up3x3", 3, True, True, True),
    ("torgb1x1", 1, False, False, False),
]


def tolerance(comparison, precision):
    """The rel-L2 bound of one layer vs the float64 NumPy reference, from the one tolerance table: comparison
    'formulations' (torch), 'cuda' or 'emulated'; precision 'fp32', or 'fp16' (FP16 storage, FP32 accumulation: the
    table's '-fp16-io' kinds)."""
    kind = f"modconv-{comparison}" + ("-fp16-io" if precision == "fp16" else "")
    return parity.tolerance(kind, precision, "out").rel_l2


def make_layer(kind, batch, cin, cout, h, w=None, seed=0, noise="full"):
    """Random inputs of one layer as float32 NumPy arrays: x, s, weight, bias, noise (or None)."""
    _, k, up, _, _ = kind
    w = w or h
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, cin, h, w)).astype(np.float32)
    s = (rng.standard_normal((batch, cin)) * 0.5 + 1.0).astype(np.float32)  # modulation bias is initialised to 1
    weight = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
    bias = (rng.standard_normal(cout) * 0.1).astype(np.float32)
    hout, wout = (2 * h, 2 * w) if up else (h, w)
    if noise == "full":
        nz = (rng.standard_normal((1, 1, hout, wout)) * 0.3).astype(np.float32)
    elif noise == "scalar":
        nz = np.full((1, 1, 1, 1), 0.25, np.float32)
    else:
        nz = None
    return x, s, weight, bias, nz


def stylegan2_layer_shapes(resolutions=(256, 512, 1024), channel_multiplier=2):
    """Every distinct modulated-conv layer of the StyleGAN2 generators at these output sizes.

    Returns:
        list: (kind, cin, cout, res_in) with kind one of LAYER_KINDS and res_in the layer's real input size,
        deduplicated on (kind, cin, cout) (keeping the largest input size).
    """
    from restyle_rt.export.nets.synthesis import channels_for

    conv, up, rgb = LAYER_KINDS

    def ch(r):
        return channels_for(r, channel_multiplier)

    shapes = {}
    for res_out in resolutions:
        layers = [(conv, ch(4), ch(4), 4), (rgb, ch(4), 3, 4)]
        r = 8
        while r <= res_out:
            layers += [(up, ch(r // 2), ch(r), r // 2), (conv, ch(r), ch(r), r), (rgb, ch(r), 3, r)]
            r *= 2
        for kind, cin, cout, res_in in layers:
            key = (kind[0], cin, cout)
            shapes[key] = (kind, cin, cout, max(res_in, shapes.get(key, (0, 0, 0, 0))[3]))
    return list(shapes.values())
