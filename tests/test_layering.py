"""The core, graph, plots and CLI packages must never load Qt."""

from __future__ import annotations

import subprocess
import sys

QT_FREE = [
    "merge_studio.core",
    "merge_studio.core.engine",
    "merge_studio.core.recipe",
    "merge_studio.core.checkpoints",
    "merge_studio.core.methods",
    "merge_studio.cli.main",
    "merge_studio.plots",
    "merge_studio.graph",
]


def test_qt_free_packages_do_not_import_pyside6():
    code = (
        "import importlib, pkgutil, sys\n"
        "import merge_studio.core, merge_studio.plots, merge_studio.graph, merge_studio.cli\n"
        "for pkg in (merge_studio.core, merge_studio.plots, merge_studio.graph, merge_studio.cli):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        f"for name in {QT_FREE!r}: importlib.import_module(name)\n"
        "from merge_studio.core.methods import list_methods; list_methods()\n"
        "from merge_studio.cli.main import build_parser; build_parser()\n"
        "qt = sorted(m for m in sys.modules if m.startswith('PySide6') or m.startswith('shiboken'))\n"
        "print('QT:' + ','.join(qt))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "QT:", proc.stdout
