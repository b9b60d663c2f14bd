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

__all__ = ["CliError", "Parser", "run"]
