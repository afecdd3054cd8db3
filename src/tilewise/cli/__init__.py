"""The command-line interface (``tilewise``)."""
