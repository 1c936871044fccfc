"""68-point face landmarks for the FFHQ recipe, offline: dlib's detector + the 68-point predictor that the
``face_recognition_models`` package ships (nothing is downloaded at run time).

Licence note: the 68-point model (iBUG 300-W training data) is licensed for research use; it is not for commercial
use. restyle-rt ships no landmark model of its own.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailable, InputError

INSTALL = "pip install 'restyle-rt[align]' (dlib-bin, face_recognition_models, scipy, pillow)"


def default_predictor_path() -> Path:
    """The 68-point predictor inside the installed ``face_recognition_models`` package (found without importing
    it: its ``__init__`` needs ``pkg_resources``, which current setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(f"face alignment needs the 68-point landmark model: {INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise BackendUnavailable(f"{path} is missing from face_recognition_models; reinstall it ({INSTALL})")
    return path


class DlibLandmarks:
    """dlib frontal face detector (one upsampling, as the official script) + 68-point shape predictor.

    Like the official ``get_landmark``, when several faces are found the last detection is used.
    """

    def __init__(self, predictor_path: os.PathLike | None = None):
        try:
            import dlib
        except ImportError:
            raise BackendUnavailable(f"face alignment needs dlib: {INSTALL}") from None
        path = Path(predictor_path) if predictor_path else default_predictor_path()
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(path))

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """[68, 2] float64 (x, y) landmarks of the last face found in an [h, w, 3] uint8 RGB image, or None."""
        a = np.ascontiguousarray(image)
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise InputError(f"expected an [h, w, 3] uint8 RGB image, got {a.dtype} {list(a.shape)}")
        dets = self._detector(a, 1)
        if len(dets) == 0:
            return None
        shape = self._predictor(a, dets[len(dets) - 1])
        return np.array([[p.x, p.y] for p in shape.parts()], np.float64)


class Aligner:
    """Landmarks + the FFHQ recipe: ``aligner(image) -> aligned uint8 image`` or an InputError naming the image."""

    def __init__(self, output_size: int = 256, transform_size: int | None = None, landmarks=None):
        self.output_size = int(output_size)
        self.transform_size = int(transform_size or output_size)
        self.landmarks = landmarks if landmarks is not None else DlibLandmarks()

    def __call__(self, image: np.ndarray, name: str = "image") -> np.ndarray:
        from .ffhq import align

        lm = self.landmarks(image)
        if lm is None:
            raise InputError(f"{name}: no face found")
        return align(image, lm, self.output_size, self.transform_size)
