"""The ``permitchain`` command line."""
