"""The one bootstrap of the calib scripts: run from a checkout as ``python calib/NAME.py``.

Python then puts calib/ first on ``sys.path``, not the repository root, and calib/ is not installed
(the wheel carries only what a user runs). Importing this module puts the root on the path, so
``rtanim``, ``engines``, ``train`` and ``calib`` import from the checkout. Each script starts with::

    if not __package__:  # run as a script
        import bootstrap  # noqa: F401
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
