"""``python -m napari_unet_loop.cli``."""

import sys

from .main import main

sys.exit(main())
