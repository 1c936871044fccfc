"""Serving: ``restyle-rt serve`` (Triton through PyTriton) and the Triton model repository generator.

* :mod:`restyle_rt.serve.protocol`: the ``restyle`` model's tensors and request handling (NumPy + the runtime).
* :mod:`restyle_rt.serve.server`: the PyTriton server; :mod:`restyle_rt.serve.env`: what it needs of its environment.
* :mod:`restyle_rt.serve.repo`: the Triton model repository (``restyle-rt triton-repo``).

Imports the runtime, never the exporter; PyTriton is imported only when a server starts (``[serve]`` extra).
Importing this package imports nothing heavy.
"""
