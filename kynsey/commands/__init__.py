"""The `kynsey` command line, one module per group of commands (assembled in ``kynsey.cli``)."""
