"""The I/O contract between exporter, engine builder and runtime, in one place.

Every network declares its inputs, outputs and dynamic axes here; export, engine build and buffer allocation read
from these descriptors (the "model descriptor" idea of TensorRT's demoDiffusion).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

BATCH = "batch"  # the one symbolic (dynamic) dimension

ENCODER_TYPES_PSP = ("GradualStyleEncoder", "ResNetGradualStyleEncoder", "BackboneEncoder", "ResNetBackboneEncoder")
ENCODER_TYPES_E4E = ("ProgressiveBackboneEncoder", "ResNetProgressiveBackboneEncoder")
CARS_DATASETS = ("cars_encode",)


def n_styles_for(output_size: int) -> int:
    """S = 2*floor(log2(R)) - 2: 1024 -> 18, 512 -> 16, 256 -> 14."""
    return 2 * int(math.log2(output_size)) - 2


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, shape (ints or the symbol ``BATCH``), dtype name."""

    name: str
    shape: tuple
    dtype: str = "float32"

    def concrete(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if d == BATCH else int(d) for d in self.shape)


@dataclass(frozen=True)
class ModelSpec:
    """What a ReStyle model is, as far as the graphs and the loop care.

    Attributes:
        n_styles: S, rows of the W+ latent.
        output_size: R, the generator's resolution.
        input_hw: encoder input (H, W): (256, 256), cars (192, 256).
        image_hw: the synthesis ``image`` output (H, W): (R, R), cars (3R/4, R) crop.
        encoder_type: the official class name from ``opts['encoder_type']``.
        dataset_type: ``opts['dataset_type']``.
    """

    n_styles: int
    output_size: int
    input_hw: tuple[int, int]
    image_hw: tuple[int, int]
    encoder_type: str
    dataset_type: str

    @property
    def is_e4e(self) -> bool:
        return self.encoder_type in ENCODER_TYPES_E4E

    @property
    def is_cars(self) -> bool:
        return self.dataset_type in CARS_DATASETS

    @property
    def backbone(self) -> str:
        return "resnet34" if self.encoder_type.startswith("ResNet") else "ir_se50"

    @classmethod
    def from_opts(cls, opts: dict) -> ModelSpec:
        """Build from an official checkpoint's ``opts`` (never guessed)."""
        r = int(opts["output_size"])
        dataset = str(opts.get("dataset_type", "ffhq_encode"))
        cars = dataset in CARS_DATASETS
        return cls(
            n_styles=n_styles_for(r),
            output_size=r,
            input_hw=(192, 256) if cars else (256, 256),
            image_hw=(r * 3 // 4, r) if cars else (r, r),
            encoder_type=str(opts["encoder_type"]),
            dataset_type=dataset,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_hw"], d["image_hw"] = list(self.input_hw), list(self.image_hw)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        d = dict(d)
        d["input_hw"], d["image_hw"] = tuple(d["input_hw"]), tuple(d["image_hw"])
        return cls(**d)

    # --- the graph contract -------------------------------------------------------------------------------

    def encoder_io(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """``encoder.onnx``: (image, feedback, latent) -> latent_next = latent + E(concat(image, feedback))."""
        h, w = self.input_hw
        ins = [
            TensorSpec("image", (BATCH, 3, h, w)),
            TensorSpec("feedback", (BATCH, 3, h, w)),
            TensorSpec("latent", (BATCH, self.n_styles, 512)),
        ]
        return ins, [TensorSpec("latent_next", (BATCH, self.n_styles, 512))]

    def synthesis_io(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """``synthesis.onnx``: latent -> (image [crop], feedback pooled to the encoder resolution)."""
        h, w = self.input_hw
        ih, iw = self.image_hw
        ins = [TensorSpec("latent", (BATCH, self.n_styles, 512))]
        outs = [TensorSpec("image", (BATCH, 3, ih, iw)), TensorSpec("feedback", (BATCH, 3, h, w))]
        return ins, outs

    def graph_io(self, graph: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
        if graph == "encoder":
            return self.encoder_io()
        if graph == "synthesis":
            return self.synthesis_io()
        raise KeyError(f"unknown graph {graph!r}; expected 'encoder' or 'synthesis'")


GRAPHS = ("encoder", "synthesis")


@dataclass(frozen=True)
class BatchProfile:
    """Optimization profile on the batch axis (min <= opt <= max)."""

    min: int = 1
    opt: int = 1
    max: int = 8

    def __post_init__(self):
        if not (1 <= self.min <= self.opt <= self.max):
            raise ValueError(f"batch profile needs 1 <= min <= opt <= max, got {self.min},{self.opt},{self.max}")

    def shapes(self, spec: ModelSpec, graph: str) -> dict[str, tuple[tuple[int, ...], ...]]:
        """Per-input (min, opt, max) concrete shapes."""
        ins, _ = spec.graph_io(graph)
        return {t.name: (t.concrete(self.min), t.concrete(self.opt), t.concrete(self.max)) for t in ins}

    def to_list(self) -> list[int]:
        return [self.min, self.opt, self.max]
