"""``python -m URSAMLib.cli``: the ``ursam`` command."""
import sys

from .main import main

sys.exit(main())
