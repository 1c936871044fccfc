"""restyle-rt: ReStyle inversion as two ONNX / TensorRT graphs and a lean, torch-free residual loop."""
__version__ = "0.1.0"
