"""Export: official checkpoint -> validated ONNX graphs (needs torch; the runtime does not)."""
from .checkpoint import Checkpoint, load_checkpoint  # noqa: F401
from .onnx import export_artifacts  # noqa: F401
