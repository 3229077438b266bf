"""The window paints before the heavy libraries load, and builds the analysis tabs right after."""

from __future__ import annotations

import subprocess
import sys


def test_the_window_module_loads_without_torch_matplotlib_or_scipy():
    code = (
        "import sys\n"
        "import merge_studio.gui.main_window, merge_studio.gui.app\n"
        "from merge_studio.core.methods import list_methods; list_methods()\n"
        "print(sorted(m for m in ('torch', 'matplotlib', 'scipy') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_a_deferred_window_builds_its_analysis_tabs_when_asked(qtbot):
    from merge_studio.gui.main_window import MainWindow

    window = MainWindow(remember_layout=False, defer_startup=True)
    qtbot.addWidget(window)
    views = window.extra_views
    assert {"Graph", "Barrier", "Permutations"} <= set(views)
    assert type(views["Graph"]).__name__ == "GraphView"
    assert window.tabs.widget(1) is views["Graph"] or views["Graph"].isAncestorOf(window.tabs.widget(1)) or window.tabs.widget(1).isAncestorOf(views["Graph"])
    titles = [window.tabs.tabText(i) for i in range(window.tabs.count())]
    assert titles[:4] == ["Inspector", "Graph", "Barrier", "Permutations"]
    window.runner.shutdown(2000)


def test_rebasin_method_defaults_match_the_alignment_defaults():
    from merge_studio.core.rebasin import align, methods

    assert methods.DEFAULT_TOLERANCE == align.DEFAULT_TOLERANCE
