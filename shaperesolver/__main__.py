"""``python -m shaperesolver``."""

import sys

from .cli import main

sys.exit(main())
