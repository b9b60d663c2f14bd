"""scripts/ run from a checkout without installing: the checkout goes on sys.path, scripts/ comes off
it (scripts/profile.py would shadow the standard library's ``profile``, which cProfile and so
torch.export import), and the CLI plumbing is osnet_edge.cli.common's."""
from __future__ import annotations

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SCRIPTS = os.path.dirname(os.path.abspath(__file__))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _SCRIPTS]
if os.path.dirname(os.path.abspath(getattr(sys.modules.get("profile"), "__file__", None) or os.sep)) == _SCRIPTS:
    del sys.modules["profile"]  # scripts/profile.py imported under the standard library's name

from osnet_edge.cli.common import CliError, Parser, run  # noqa: E402

__all__ = ["CliError", "Parser", "run", "calibration_dir"]


def calibration_dir(explicit: str | None, shared_subdir: str) -> str:
    """The benchmarks' calibration crops: ``--calib`` when given, else ``shared_subdir`` of the shared data."""
    if explicit is not None:
        return explicit
    from osnet_edge.data import shared_data_dir

    data = shared_data_dir()
    if data is None:
        raise CliError("--calib DIR needed (shared data not found)")
    return str(data / shared_subdir)
