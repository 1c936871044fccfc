"""Python-backend ``model.py`` files that ``restyle-rt triton-repo`` copies into a Triton model repository.

They import ``triton_python_backend_utils``, which exists only inside Triton's Python-backend stub: do not import
them elsewhere.
"""
