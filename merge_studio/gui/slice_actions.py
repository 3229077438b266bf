"""Opens the slice editor for the window and puts the slices it returns into the recipe."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtWidgets import QDialog

if TYPE_CHECKING:
    from merge_studio.gui.main_window import MainWindow


def open_slice_editor(window: MainWindow) -> QDialog:
    """Show the editor (modal); on "Use these slices" the recipe gets them and the form is checked again.

    Slices that each take one model's layers are a passthrough stack, so the method
    becomes passthrough; slices that merge several sources keep the chosen method.
    """
    from merge_studio.gui.dialogs.slice_editor import SliceEditorDialog

    session = window.session
    models = [(str(m.path), m.name, m.checkpoint.infos) for m in session.ready_models
              if m.checkpoint is not None and not m.is_adapter]
    dialog = SliceEditorDialog(models, session.output.slices, method=session.method, parent=window)
    dialog.accepted.connect(lambda: apply_slices(window, dialog.slices()))
    dialog.open()
    return dialog


def apply_slices(window: MainWindow, slices: list[dict]) -> None:
    session, panel = window.session, window.method_panel
    session.output.slices = slices or None
    if slices and all(len(sl["sources"]) == 1 for sl in slices) and session.method != "passthrough":
        panel.select_method("passthrough")
    panel.show_slices()
    panel.sig_changed.emit()
