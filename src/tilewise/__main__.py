"""``python -m tilewise``: the same as the ``tilewise`` command (batch scripts use it with the venv's python)."""

from tilewise.cli.main import main

main()
