"""One note while Numba compiles the CPU kernels, which happens once per install and dtype.

The first fit or query with an empty Numba cache spends seconds compiling; a cache hit
compiles nothing and so says nothing. ``compile_note`` listens for Numba's compile event
and calls ``say`` once, when the first compile starts. Without Numba (the CUDA and NumPy
backends need none) it does nothing.
"""

from __future__ import annotations

import contextlib

__all__ = ["COMPILING", "compile_note"]

#: what the note says
COMPILING = "compiling kernels, first run only (cached for later runs)"


@contextlib.contextmanager
def compile_note(say):
    """Call ``say(COMPILING)`` once if Numba starts compiling inside the ``with`` block.

    Parameters
    ----------
    say : callable
        Takes the message; e.g. ``print`` or a progress bar's ``set_description_str``.
    """
    try:
        from numba.core import event
    except ImportError:
        yield
        return

    class Note(event.Listener):
        said = False

        def on_start(self, _):
            if not self.said:
                self.said = True
                say(COMPILING)

        def on_end(self, _):
            pass

    with event.install_listener("numba:compile", Note()):
        yield
