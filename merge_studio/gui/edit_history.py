"""Undo and redo for the window's edits, and the unsaved-changes marker.

Edits to the model list (add, remove, reorder, base), the method form, the
per-model coefficients and the output settings are recorded as snapshots of the
session's editable state: after each burst of changes (a slider drag is one edit)
the new snapshot is pushed if it differs from the last. Undo restores the previous
snapshot; a model that comes back is read again from its file. The stack's clean
state is the last saved or opened recipe, and the title shows ``*`` when the window
differs from it.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QTimer
from PySide6.QtGui import QAction, QKeySequence, QUndoCommand, QUndoStack

if TYPE_CHECKING:
    from merge_studio.gui.main_window import MainWindow
    from merge_studio.gui.session import Session

DEBOUNCE_MS = 250


@dataclass
class ModelState:
    path: str
    params: dict[str, Any]
    params_by_method: dict[str, dict[str, Any]]
    in_models: bool
    arch: str | None


@dataclass
class EditState:
    """What the user can edit, without the loaded checkpoints."""

    method: str
    params: dict[str, dict[str, Any]]
    models: list[ModelState]
    base: str | None
    output: dict[str, Any]


def capture(session: Session) -> EditState:
    base = session.base
    return EditState(
        method=session.method,
        params=copy.deepcopy(session._params),
        models=[ModelState(str(m.path), copy.deepcopy(m.params), copy.deepcopy(m.params_by_method), m.in_models, m.arch)
                for m in session.models],
        base=str(base.path) if base is not None else None,
        output=copy.deepcopy(dataclasses.asdict(session.output)),
    )


def describe(before: EditState, after: EditState) -> str:
    """A few words for the Edit menu (“Undo add model”)."""
    if len(after.models) > len(before.models):
        return "add model" if len(after.models) - len(before.models) == 1 else "add models"
    if len(after.models) < len(before.models):
        return "remove model" if len(before.models) - len(after.models) == 1 else "remove models"
    if [m.path for m in after.models] != [m.path for m in before.models]:
        return "reorder models"
    if after.base != before.base:
        return "base model"
    if after.method != before.method:
        return "method"
    if after.output != before.output:
        return "output"
    if [m.params for m in after.models] != [m.params for m in before.models]:
        return "coefficients"
    return "parameters"


class _Snapshot(QUndoCommand):
    def __init__(self, history: EditHistory, before: EditState, after: EditState) -> None:
        super().__init__(describe(before, after))
        self._history, self._before, self._after = history, before, after
        self._done = True  # pushed after the change happened: the first redo does nothing

    def redo(self) -> None:
        if self._done:
            self._done = False
            return
        self._history.restore(self._after)

    def undo(self) -> None:
        self._history.restore(self._before)


class EditHistory(QObject):
    """Records the window's edits; Edit ▸ Undo (Ctrl+Z) and Redo (Ctrl+Shift+Z) walk them."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.stack = QUndoStack(self)
        self.current = capture(window.session)
        self._restoring = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.record)
        self.undo_action = QAction("&Undo", window)
        self.undo_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Undo))
        self.undo_action.triggered.connect(lambda _c=False: self.undo())
        self.redo_action = QAction("&Redo", window)
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        self.redo_action.triggered.connect(lambda _c=False: self.redo())
        self.stack.indexChanged.connect(self._update_actions)
        self.stack.cleanChanged.connect(self._update_actions)
        window.method_panel.sig_changed.connect(self.schedule)
        window.method_panel.sig_method_changed.connect(self.schedule)
        window.table_model.sig_params_edited.connect(self.schedule)
        window.table_model.sig_reordered.connect(self.schedule)
        self._update_actions()

    @property
    def dirty(self) -> bool:
        """Whether the window differs from the last saved or opened recipe."""
        self.record()
        return not self.stack.isClean()

    def schedule(self, *_args: object) -> None:
        if not self._restoring:
            self._timer.start()
            self._update_actions()

    def record(self) -> None:
        """Push the edits made since the last snapshot, if any."""
        self._timer.stop()
        if self._restoring:
            return
        now = capture(self.window.session)
        if now != self.current:
            before, self.current = self.current, now
            self.stack.push(_Snapshot(self, before, now))

    def undo(self) -> None:
        self.record()
        self.stack.undo()

    def redo(self) -> None:
        self.record()
        self.stack.redo()

    def mark_clean(self, *, forget: bool = False) -> None:
        """The window now matches a saved recipe (``forget``: a new one was opened; older steps go)."""
        self._timer.stop()
        self.current = capture(self.window.session)
        if forget:
            self.stack.clear()
        self.stack.setClean()
        self._update_actions()

    def restore(self, state: EditState) -> None:
        """Make the session what ``state`` says (models that come back are read again)."""
        from merge_studio.gui.session import OutputSettings

        window, session = self.window, self.window.session
        self._restoring = True
        try:
            wanted = {m.path for m in state.models}
            for model in list(session.models):
                if str(model.path) not in wanted:
                    session.remove(model.id)
            reload = []
            for ms in state.models:
                row = session.find_path(ms.path)
                if row is None:
                    row = session.add_pending(ms.path, in_models=ms.in_models)
                    reload.append((row.id, row.path))
                row.params = copy.deepcopy(ms.params)
                row.params_by_method = copy.deepcopy(ms.params_by_method)
                row.in_models, row.arch = ms.in_models, ms.arch
            order = {m.path: i for i, m in enumerate(state.models)}
            session.models.sort(key=lambda m: order.get(str(m.path), len(order)))
            base = session.find_path(state.base) if state.base else None
            session.base_id = base.id if base is not None else None
            session.method = state.method
            session._params = copy.deepcopy(state.params)
            session.output = OutputSettings(**copy.deepcopy(state.output))
            window.method_panel.load_from_session()
            window.table_model.refresh()
            if reload:
                window._start_loading(reload)
            window._on_session_changed()
        finally:
            self._restoring = False
            self._timer.stop()
            self.current = state
            self._update_actions()

    def _update_actions(self, *_args: object) -> None:
        pending = self._timer.isActive()
        self.undo_action.setEnabled(self.stack.canUndo() or pending)
        self.undo_action.setText(f"&Undo {self.stack.undoText()}".strip() if not pending else "&Undo")
        self.redo_action.setEnabled(self.stack.canRedo() and not pending)
        self.redo_action.setText(f"&Redo {self.stack.redoText()}".strip())
        self.window.setWindowModified(pending or not self.stack.isClean())
