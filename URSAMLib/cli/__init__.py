"""The ``ursam`` command line: :mod:`.main` builds the parser from one module per subcommand
(:mod:`.segment`, :mod:`.evaluate`, :mod:`.tools`; ``batch`` in :mod:`URSAMLib.batch`), sharing
:mod:`.options`."""
from .main import CANCELLED_NOTE, EXIT_CANCELLED, EXIT_USER_ERROR, build_parser, main

__all__ = ["CANCELLED_NOTE", "EXIT_CANCELLED", "EXIT_USER_ERROR", "build_parser", "main"]
