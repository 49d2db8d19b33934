"""The one note while Numba compiles: said once, only when something compiles."""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse

from als import AlternatingLeastSquares
from als.backends.numba_cpu import NumbaBackend
from als.compile_note import COMPILING, compile_note


def _fresh_function():
    """A function Numba has never compiled in this process (each call makes a new one)."""

    @numba.njit
    def add_one(x):
        return x + 1

    return add_one


def test_said_once_however_many_functions_compile():
    said = []
    with compile_note(said.append):
        assert _fresh_function()(1) == 2
        assert _fresh_function()(2.5) == 3.5
    assert said == [COMPILING]


def test_nothing_said_without_a_compile_or_outside_the_block():
    compiled = _fresh_function()
    compiled(1)  # compiled here, outside any note
    said = []
    with compile_note(said.append):
        compiled(2)  # the int64 version exists: no compile
    _fresh_function()(3)  # after the block: not listened to
    assert said == []


def _compiling_solve(monkeypatch):
    solve = NumbaBackend.solve

    def solve_after_a_compile(self, *args, **kwargs):
        _fresh_function()(1)  # stands in for a kernel compiled on first use
        return solve(self, *args, **kwargs)

    monkeypatch.setattr(NumbaBackend, "solve", solve_after_a_compile)


def test_the_fit_progress_bar_says_so_while_compiling(monkeypatch, capsys):
    _compiling_solve(monkeypatch)
    matrix = scipy.sparse.random(30, 20, density=0.3, format="csr", random_state=0)
    model = AlternatingLeastSquares(factors=4, iterations=2, random_state=0, backend="cpu")
    model.fit(matrix.astype(np.float32), show_progress=True)
    assert COMPILING in capsys.readouterr().err
    model.fit(matrix.astype(np.float32), show_progress=False)
    assert COMPILING not in capsys.readouterr().err
