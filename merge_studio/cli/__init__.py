"""The ``merge-studio`` command line: thin argparse front ends over the core."""
