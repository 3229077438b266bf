"""``python -m merge_studio`` is the same as the ``merge-studio`` command."""

from merge_studio.cli.main import main

if __name__ == "__main__":  # not when a spawned worker process re-imports the main module
    raise SystemExit(main())
