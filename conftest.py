"""Repository-wide pytest settings.

The chapter notebooks under book/ are tested by nbval. Its options are set here, and only when the
nbval plugin is active (installed and not disabled with ``-p no:nbval``), so that `pytest tests` works
for pip users who have only pytest and hypothesis (pyproject's `addopts` holds no plugin options).
tools/test.sh adds `-n 2 --dist loadfile` and a global time guard.
"""

from __future__ import annotations

import pathlib

ROOT = pathlib.Path(__file__).resolve().parent
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"
NBVAL_DEFAULT_CELL_TIMEOUT = 2000


def _nbval_active(config) -> bool:
    return config.pluginmanager.hasplugin("nbval") and hasattr(config.option, "nbval")


def pytest_configure(config):
    """The book's nbval settings: --nbval-lax --nbval-current-env --nbval-sanitize-with
    tests/nbval_sanitize.cfg, no per-cell time limit (command-line values win).

    No cell may fail because the machine is busy: a chapter's cells get all the time they need, and
    tools/test.sh puts one generous limit on the whole run instead (a hung kernel still ends).
    """
    if not _nbval_active(config):
        return
    option = config.option
    if not option.nbval:  # --nbval (compare every output) was not asked for
        option.nbval_lax = True
    option.nbval_current_env = option.nbval_current_env or not option.nbval_kernel_name
    if option.nbval_sanitize_with is None and option.sanitize_with is None:
        option.nbval_sanitize_with = str(SANITIZE)
    if option.nbval_cell_timeout == NBVAL_DEFAULT_CELL_TIMEOUT:
        option.nbval_cell_timeout = None  # wait as long as the cell runs
    if str(option.nbval_kernel_startup_timeout) == "60":  # nbval's default: too short on a busy machine
        option.nbval_kernel_startup_timeout = 600
    _patience_for_outputs()


def _patience_for_outputs(seconds: float = 300.0) -> None:
    """nbval gives a cell's last output messages 5 s to arrive after its reply (a fixed attribute),
    which a loaded machine can exceed: give them minutes (a hung kernel is still ended by tools/test.sh)."""
    from nbval.plugin import IPyNbCell

    if getattr(IPyNbCell, "_ibea_patient", False):
        return
    original = IPyNbCell.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.output_timeout = max(self.output_timeout, seconds)

    IPyNbCell.__init__ = __init__
    IPyNbCell._ibea_patient = True


def pytest_ignore_collect(collection_path, config):
    # Without the nbval plugin there is nothing to collect in book/ (no Python tests live there).
    if collection_path.suffix == ".ipynb" and not _nbval_active(config):
        return True
    return None
