"""The Stable Diffusion pictures in docs/images: the block-weight editor and an SD checkpoint's block tree.

    QT_QPA_PLATFORM=offscreen python docs/sd_screenshots.py [OUT_FOLDER]

Tiny SD 1.x files with the real key layout are written to a temporary folder
(docs/sd_demo.py) and opened with a block-weighted add-difference recipe.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(out: Path) -> None:
    from PySide6.QtWidgets import QApplication

    from docs.sd_demo import main as write_demo
    from merge_studio.gui.app import _settle, _wait_for_load, _wait_idle
    from merge_studio.gui.main_window import MainWindow
    from merge_studio.gui.resources import apply_style

    scratch = Path(tempfile.mkdtemp(prefix="sd-shots-"))
    os.environ["XDG_CONFIG_HOME"] = str(scratch / "config")
    app = QApplication.instance() or QApplication(["merge-studio"])
    apply_style(app)
    recipe = write_demo(scratch / "sd")
    window = MainWindow(remember_layout=False)
    window.resize(1280, 860)
    window.open_recipe(recipe)
    window.show()
    _wait_for_load(window, 60_000)
    window.model_list.select_id(window.session.models[0].id)
    window.show_tab("Graph")
    _wait_idle(window, 60_000)
    window.fit_panels()
    graph = window.findChild(type(window.tabs.widget(1)), None) or window.tabs.currentWidget()
    view = graph.tree_view
    model = view.model()
    unet = model.index(0, 0)
    view.expand(unet)
    for row in range(model.rowCount(unet)):
        child = model.index(row, 0, unet)
        if str(child.data()).startswith(("Input blocks", "Output blocks")):
            view.expand(child)
    view.resizeColumnToContents(0)
    _settle(300)
    out.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(out / "sd_block_tree.png"), "PNG")
    panel = window.method_panel
    _settle(200)
    panel.grab().save(str(out / "block_weights.png"), "PNG")
    window.resize(1024, 768)
    _settle(300)
    window.grab().save(str(scratch / "at-1024.png"), "PNG")
    print(f"wrote {out / 'sd_block_tree.png'} and {out / 'block_weights.png'} (1024x768 check: {scratch / 'at-1024.png'})")
    window.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "images")
