"""Repository-wide pytest settings.

The chapter notebooks under book/ are tested by nbval. Its options are set here, and only when
nbval is installed, so that `pytest tests` works for pip users who have only pytest and hypothesis
(pyproject's `addopts` holds no plugin options). tools/test.sh adds `-n 2 --dist loadfile`.
"""

from __future__ import annotations

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent
HAS_NBVAL = importlib.util.find_spec("nbval") is not None

SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"


def pytest_configure(config):
    """The book's nbval settings: --nbval-lax --nbval-current-env --nbval-sanitize-with
    tests/nbval_sanitize.cfg --nbval-cell-timeout=300 (command-line values win)."""
    if not HAS_NBVAL:
        return
    option = config.option
    if not option.nbval:  # --nbval (compare every output) was not asked for
        option.nbval_lax = True
    option.nbval_current_env = option.nbval_current_env or not option.nbval_kernel_name
    if option.nbval_sanitize_with is None and option.sanitize_with is None:
        option.nbval_sanitize_with = str(SANITIZE)
    if option.nbval_cell_timeout == 2000:  # nbval's default
        option.nbval_cell_timeout = 300.0


def pytest_ignore_collect(collection_path, config):
    # Without nbval there is nothing to collect in book/ (no Python tests live there).
    if not HAS_NBVAL and collection_path.suffix == ".ipynb":
        return True
    return None
