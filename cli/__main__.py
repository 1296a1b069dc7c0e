"""``python -m anirender.cli``: the same as the ``anirender`` command (the add-on starts
the local service this way, with the interpreter named in its preferences)."""

import sys

from . import main

sys.exit(main())
