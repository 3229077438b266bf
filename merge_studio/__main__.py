"""``python -m merge_studio`` is the same as the ``merge-studio`` command."""

from merge_studio.cli.main import main

raise SystemExit(main())
