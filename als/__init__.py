"""als: implicit-feedback alternating least squares on the CPU (Numba) and GPU (CuPy).

``AlternatingLeastSquares`` is a drop-in replacement for implicit 0.7's model of the same
name; see ``als.model``.
"""

from .model import AlternatingLeastSquares, ModelFileError, ModelFitError
from .validation import ParameterWarning

__all__ = ["AlternatingLeastSquares", "ModelFileError", "ModelFitError", "ParameterWarning"]
__version__ = "0.1.0"
