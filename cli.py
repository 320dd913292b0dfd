"""The ``rtanim`` command from a checkout (``python cli.py ...``); the command line itself is :mod:`rtanim.cli.app`.

Not installed by the wheel: the installed entry points are the ``rtanim`` script and ``python -m rtanim``.
"""

from rtanim.cli.app import app, main

__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
