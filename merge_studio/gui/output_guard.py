"""Questions the window asks before it replaces an output or stops a running merge."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtWidgets import QMessageBox, QWidget

from merge_studio.core.overwrite import existing

Button = QMessageBox.StandardButton


def confirm_overwrite(parent: QWidget, targets: Sequence[str | Path]) -> bool:
    """``True`` when nothing would be replaced, or the user agrees to replace it."""
    found = existing(targets)
    if not found:
        return True
    what = "folder" if found[0].is_dir() else "file"
    names = "\n".join(str(p) for p in found[:4]) + ("\n…" if len(found) > 4 else "")
    answer = QMessageBox.question(
        parent,
        "Replace the existing output?",
        f"This {what} already exists and the merge would replace it:\n\n{names}\n\nReplace it?",
        Button.Yes | Button.No,
        Button.No,
    )
    return answer == Button.Yes


def confirm_stop_merge(parent: QWidget) -> bool:
    """Closing during a merge: ``True`` to cancel it (nothing is written) and close."""
    answer = QMessageBox.question(
        parent,
        "A merge is running",
        "Closing the window cancels the running merge; nothing will be written.\n\nCancel the merge and close?",
        Button.Yes | Button.No,
        Button.No,
    )
    return answer == Button.Yes


def confirm_discard_changes(parent: QWidget) -> bool:
    """Closing with unsaved edits: ``True`` to close (after saving, when asked), ``False`` to stay."""
    answer = QMessageBox.question(
        parent,
        "Unsaved changes",
        "The models, method or output were changed since the recipe was last saved.\n\n"
        "Save them as a recipe before closing?",
        Button.Save | Button.Discard | Button.Cancel,
        Button.Save,
    )
    if answer == Button.Save:
        return parent.save_recipe() is not None
    return answer == Button.Discard
