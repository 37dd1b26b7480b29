"""The ``persona`` command line: the edge where settings are built and errors become exit codes."""
