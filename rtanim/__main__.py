"""``python -m rtanim``: the same command line as the ``rtanim`` script."""

from rtanim.cli.app import main

if __name__ == "__main__":
    main()
