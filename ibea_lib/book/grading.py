"""Helpers for the check cells of the coding exercises.

A coding exercise asks the student to rebuild something the library already has (gradient descent,
the modified loss, an epoch of SGD, the sequential field, ...), and its check compares the student's
function with the library. A check that only compares would pass when the student's function is
one call of that library function. :func:`forbid` closes that hole: inside the ``with`` block the
named functions raise, wherever they are looked up (under every name in ``ibea_lib`` and its
submodules, and in a namespace such as the notebook's ``globals()``)::

    reference = ls.gd_trajectory(rosen, theta0, 0.015, 50)       # the library, outside the block
    with ib.book.grading.forbid(ls.gd_trajectory, namespace=globals()):
        mine = my_gd(rosen, theta0, 0.015, 50)                  # the student's code, inside
    assert torch.allclose(mine, reference)

What it cannot see: a function imported under another name before the block into a namespace that
is not passed (``from ibea_lib import gd_step as step`` in a module of the student's own), or the
same computation copied from the library's source. The instructors' page says how to grade.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, MutableMapping

__all__ = ["Forbidden", "forbid"]


class Forbidden(AssertionError):
    """Raised by a forbidden function inside :func:`forbid` (an ``AssertionError``: a failed check)."""


def _raiser(name: str) -> Callable:
    def forbidden(*args, **kwargs):
        raise Forbidden(f"this check forbids {name}: rebuild it from the exercise's building blocks")

    forbidden.__name__ = f"forbidden_{name.rsplit('.', 1)[-1]}"
    return forbidden


@contextlib.contextmanager
def forbid(*functions: Callable, namespace: MutableMapping | None = None) -> Iterator[None]:
    """Within the block, every reference to one of ``functions`` raises :class:`Forbidden`.

    The functions are replaced in every loaded module ``ibea_lib`` / ``ibea_lib.*``, in
    ``__main__`` and in ``namespace`` (pass ``globals()`` in a notebook), under whatever name they
    are bound there; everything is restored on exit, also after an error.
    """
    if not functions:
        raise ValueError("forbid needs at least one function")
    for f in functions:
        if not callable(f):
            raise TypeError(f"forbid takes functions, got {type(f).__name__}")
    # a chapter's own copy of a #@save function (defined in the notebook) also forbids the copy that
    # tools/save_cells.py put into ibea_lib.book.saved, which a student could call instead
    from . import saved

    copies = []
    for f in functions:
        twin = getattr(saved, getattr(f, "__name__", ""), None)
        if getattr(f, "__module__", None) == "__main__" and callable(twin):
            copies.append(twin)
    targets = {id(f): f for f in (*functions, *copies)}
    spaces: list[MutableMapping] = [
        vars(m) for name, m in list(sys.modules.items())
        if m is not None and (name == "ibea_lib" or name.startswith("ibea_lib.") or name == "__main__")
    ]
    if namespace is not None:
        spaces.append(namespace)
    undo: list[tuple[MutableMapping, str, object]] = []
    seen: set[int] = set()
    try:
        for space in spaces:
            if id(space) in seen:
                continue
            seen.add(id(space))
            for key, value in list(space.items()):
                if id(value) in targets and value is targets[id(value)]:
                    qual = f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', key)}"
                    undo.append((space, key, value))
                    space[key] = _raiser(qual)
        yield
    finally:
        for space, key, value in reversed(undo):
            space[key] = value
