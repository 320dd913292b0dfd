"""The ``rtanim`` command line (typer + rich): parses and checks arguments, then hands over to :mod:`rtanim.commands`."""
