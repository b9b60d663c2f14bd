"""``python -m osnet_edge COMMAND ...``: the ``osnet-edge`` command where its script is not on PATH."""
import sys

from osnet_edge.cli import main

sys.exit(main())
