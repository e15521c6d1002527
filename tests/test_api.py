"""The API reference page (book/api.md) lists every public name with its true signature.

The page gives each ``autofunction`` an explicit signature without type hints (so that the
strict Sphinx build has no unresolvable annotation); this test keeps those signatures equal to
the code's, and checks that nothing of ``ibea_lib.__all__`` is missing from the page.
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
import re
import types

import pytest
import torch

import ibea_lib as ib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = (ROOT / "book" / "api.md").read_text()


def documented() -> dict[str, str]:
    """Full name -> signature, for each autofunction / autoclass of the page."""
    out, module = {}, "ibea_lib"
    for line in PAGE.splitlines():
        if m := re.match(r"\.\. currentmodule:: ([\w.]+)", line):
            module = m.group(1)
        if m := re.match(r"\.\. auto(?:function|class):: ([\w.]+)(\(.*\))$", line):
            out[f"{module}.{m.group(1)}"] = m.group(2)
    return out


def plain_signature(obj) -> str:
    sig = inspect.signature(obj)
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


@pytest.mark.parametrize("name", sorted(documented()))
def test_page_signatures_match_the_code(name):
    module, attr = name.rsplit(".", 1)
    obj = getattr(importlib.import_module(module), attr)
    assert documented()[name] == plain_signature(obj), f"update the signature of {name} in book/api.md"


def test_every_public_name_is_on_the_page():
    names = {n.rsplit(".", 1)[1] for n in documented() if n.startswith("ibea_lib.") and n.count(".") == 1}
    public = {
        n
        for n in ib.__all__
        if not isinstance(getattr(ib, n), types.ModuleType) and n not in ("Loss", "Params")
    }
    assert public - names == set(), f"not on book/api.md: {sorted(public - names)}"


def test_import_ibea_lib_does_not_load_matplotlib():
    import subprocess
    import sys

    code = "import sys, ibea_lib; assert 'matplotlib' not in sys.modules, 'matplotlib was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})


def test_numbers_are_tensors():
    A, b = torch.eye(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    L = ib.data.quadratic_loss(A, b)
    th = torch.tensor([0.3, -0.2], dtype=torch.float64)
    errs = ib.local_errors(
        lambda p, h: ib.gd_step(L, p, h), lambda p, h: -ib.grad(L, p), th, [0.1, 0.05], steps=4
    )
    assert errs.dim() == 1 and errs.shape == (2,)
    assert ib.fit_order([0.1, 0.05], errs).dim() == 0
    assert ib.geometric_lrs(0.1, count=3).dim() == 1
    for value in (
        ib.sharpness(L, th),
        ib.cosine(L, L, th),
        ib.alignment(L, L, th),
        ib.modified_loss(L, th, 0.1),
    ):
        assert isinstance(value, torch.Tensor) and value.dim() == 0
    assert all(t.dim() == 0 for t in ib.multitask_terms([L, L], th, 0.1).values())


def test_overhead_benchmark_smoke():
    """benchmarks/bench_overhead.py --quick runs (and checks that both sides agree); no timing assert."""
    import subprocess
    import sys

    script = ROOT / "benchmarks" / "bench_overhead.py"
    out = subprocess.run(
        [sys.executable, str(script), "--quick"],
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "", "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert "lie_bracket" in out.stdout and "library/bare" in out.stdout
