"""``python -m vilasr_ros.cli``."""

import sys

from vilasr_ros.cli import main

sys.exit(main())
