"""als: implicit-feedback alternating least squares on the CPU (Numba) and GPU (CuPy).

``AlternatingLeastSquares`` is a drop-in replacement for implicit 0.7's model of the same
name; see ``als.model``. The backends are ``als.backends``.
"""

import importlib.util
import sys
from pathlib import Path


def _mount_backends():
    """Import ``backends/`` beside this package as ``als.backends`` unless it is importable.

    The repository keeps the backends in ``backends/`` beside ``als/`` (a backend is usable
    and testable without the model); wheels and editable installs map that folder to
    ``als.backends`` (``package-dir`` in pyproject.toml). Run straight from a checkout,
    nothing maps it, so it is registered here once, before anything imports it.
    """
    name = "als.backends"
    if name in sys.modules or importlib.util.find_spec(name) is not None:
        return
    folder = Path(__file__).resolve().parent.parent / "backends"
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    globals()["backends"] = module  # as the import system binds a submodule on its parent


_mount_backends()

# after the mount: the model imports als.backends
from .errors import ModelFileError, ModelFitError, ParameterWarning  # noqa: E402
from .model import AlternatingLeastSquares  # noqa: E402

__all__ = ["AlternatingLeastSquares", "ModelFileError", "ModelFitError", "ParameterWarning"]
__version__ = "0.1.0"
