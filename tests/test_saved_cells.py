"""The code the chapters teach (their ``#@save`` cells) and ``ibea_lib/book/saved.py`` are one.

``tools/save_cells.py`` writes the module from the chapters; this test fails when someone edits a
``#@save`` cell without regenerating the module, or edits the module by hand.
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("save_cells", ROOT / "tools" / "save_cells.py")
sc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sc)


def test_saved_module_agrees_with_the_chapters():
    assert sc.TARGET.read_text() == sc.render(), "run: python tools/save_cells.py"
    assert sc.main(["--check"]) == 0


def test_every_saved_definition_is_importable():
    import ibea_lib.book.saved as saved

    names = []
    for path in sc.chapters():
        for body in sc.saved_cells(path):
            tree = ast.parse(body)
            names += [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
            for node in tree.body:  # only definitions: a #@save cell must not compute anything
                allowed = (ast.FunctionDef, ast.ClassDef, ast.Assign, ast.Expr)
                assert isinstance(node, allowed), (path.name, node)
    assert len(names) == len(set(names)), "two #@save cells define the same name"
    for name in names:
        assert callable(getattr(saved, name))
    # the chapters of Part I-III save the code they teach
    for expected in ("rk4_flow", "local_errors", "fit_order", "global_errors", "gd_field_second_order",
                     "reshuffling_field", "reshuffled_mean_epoch", "bracket_sum", "summed_step",
                     "alternating_sweep", "conflict_free_step", "field_bracket", "parallelogram",
                     "stop_gradient_bracket", "sequential_field", "flipped_sequential_field",
                     "mean_over_orders"):
        assert expected in names, expected


def test_book_helpers_reexport_the_chapter_code():
    import ibea_lib.book.saved as saved
    from ibea_lib.book import landscapes, sgd

    assert landscapes.gd_field_second_order is saved.gd_field_second_order
    assert landscapes.global_errors is saved.global_errors
    assert callable(sgd.reshuffling_field) and callable(sgd.bracket_sum)


def test_forbid_rejects_and_restores():
    import pytest
    import torch

    import ibea_lib as ib
    from ibea_lib.book import grading

    theta = torch.tensor([1.0, 2.0], dtype=torch.float64)
    loss = lambda p: (p**2).sum()
    ns = {"step": ib.gd_step}
    with grading.forbid(ib.gd_step, namespace=ns):
        with pytest.raises(AssertionError, match="forbids"):
            ib.gd_step(loss, theta, 0.1)
        with pytest.raises(AssertionError):
            ib.integrate.gd_step(loss, theta, 0.1)
        with pytest.raises(AssertionError):
            ns["step"](loss, theta, 0.1)
        assert torch.allclose(ib.grad(loss, theta), 2 * theta)  # everything else still works
    assert torch.allclose(ib.gd_step(loss, theta, 0.1), 0.8 * theta)  # restored
    assert ns["step"] is ib.gd_step
    with pytest.raises(ValueError):
        with grading.forbid():
            pass
