"""The model list: drop files here, reorder by drag, mark the base, edit coefficients in place."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import (
    QAction,
    QDragEnterEvent,
    QDragMoveEvent,
    QDropEvent,
    QFont,
    QFontMetrics,
    QPainter,
    QPaintEvent,
    QPalette,
    QResizeEvent,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QHeaderView,
    QMenu,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QWidget,
)

from merge_studio.gui.forms.coefficient_table import CoefficientDelegate
from merge_studio.gui.views.checkpoint_model import (
    COL_DTYPE,
    COL_FORMAT,
    COL_NAME,
    COL_PARAMS,
    COL_SIZE,
    ERROR_COLOR,
    STATUS_ROLE,
    SUBTITLE_ROLE,
    CheckpointTableModel,
)
from merge_studio.gui.views.name_elide import fit_name

EMPTY_TEXT = "Drop checkpoints or model folders here\nor use File ▸ Open… (Ctrl+O)"


def paths_from_mime(mime) -> list[Path]:
    """Local files and folders in a drop (other URLs are ignored)."""
    if not mime.hasUrls():
        return []
    return [Path(u.toLocalFile()) for u in mime.urls() if u.isLocalFile() and u.toLocalFile()]


class NameDelegate(QStyledItemDelegate):
    """The name on the first line, format · dtype · tensors (or the error) muted below it."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index) -> None:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        title, subtitle = opt.text, index.data(SUBTITLE_ROLE) or ""
        opt.text = ""
        opt.state &= ~QStyle.StateFlag.State_HasFocus  # the row is selected as a whole; no cell frame
        widget = opt.widget
        style = widget.style() if widget is not None else QApplication.style()
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, widget)
        rect = opt.rect.adjusted(6, 3, -6, -3)
        if not opt.icon.isNull():
            size = opt.decorationSize
            icon_rect = QRect(rect.left(), rect.top() + (rect.height() - size.height()) // 2, size.width(), size.height())
            opt.icon.paint(painter, icon_rect)
            rect.setLeft(icon_rect.right() + 8)
        painter.save()
        font = QFont(opt.font)
        painter.setFont(font)
        metrics = QFontMetrics(font)
        top = QRect(rect.left(), rect.top(), rect.width(), rect.height() // 2)
        bottom = QRect(rect.left(), rect.top() + rect.height() // 2, rect.width(), rect.height() - rect.height() // 2)
        selected = bool(opt.state & QStyle.StateFlag.State_Selected)
        text_color = opt.palette.color(QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text)
        foreground = index.data(Qt.ItemDataRole.ForegroundRole)
        painter.setPen(foreground.color() if foreground is not None else text_color)
        painter.drawText(top, int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom),
                         fit_name(title, metrics, top.width()))
        small = QFont(opt.font)
        small.setBold(False)
        small.setPointSizeF(max(opt.font.pointSizeF() * 0.85, 7.0))
        painter.setFont(small)
        status = index.data(STATUS_ROLE)
        muted = opt.palette.color(QPalette.ColorRole.PlaceholderText)
        painter.setPen(ERROR_COLOR if status == "error" else muted)
        painter.drawText(bottom, int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop),
                         QFontMetrics(small).elidedText(subtitle, Qt.TextElideMode.ElideRight, bottom.width()))
        painter.restore()

    def sizeHint(self, option: QStyleOptionViewItem, index) -> QSize:  # noqa: N802
        hint = super().sizeHint(option, index)
        return QSize(hint.width(), max(hint.height(), 2 * option.fontMetrics.height() + 8))


NAME_MIN_WIDTH = 130  # below this the names ("mlp_seed0", "mlp_seed1") cannot be told apart
FOLDING_COLUMNS = (COL_SIZE, COL_PARAMS)  # hidden in this order when the list is narrow (the Inspector has them)


class CheckpointList(QTableView):
    """A table of the loaded models over a :class:`CheckpointTableModel`."""

    sig_files_dropped = Signal(list)
    """``list[Path]`` dropped from a file manager."""
    sig_remove_requested = Signal(list)
    """``list[int]`` model ids the user asked to remove."""
    sig_inputs_requested = Signal(list, bool)
    """Model ids to merge (True) or to leave out of the merge (False)."""
    sig_base_requested = Signal(object)
    """A model id to use as the base, or ``None`` to clear it."""
    sig_current_changed = Signal(object)
    """The selected model id, or ``None``."""
    sig_reveal_requested = Signal(object)
    """A model id whose folder the user wants to open."""
    sig_compare_requested = Signal(list)
    """Two model ids to compare layer by layer in the Graph tab (cosine similarity)."""
    sig_align_requested = Signal(list)
    """Two model ids to align (B to A) in the Permutations tab."""

    def __init__(self, table_model: CheckpointTableModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("checkpoint_list")
        self.table_model = table_model
        self.menu_extensions: list[Callable[[QMenu, list[int]], None]] = []  # add actions for the selected rows
        self.setModel(table_model)
        self.setItemDelegate(CoefficientDelegate(table_model, self))
        self.setItemDelegateForColumn(COL_NAME, NameDelegate(self))
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked | QAbstractItemView.EditTrigger.EditKeyPressed)
        self.setDragEnabled(True)
        self.setAcceptDrops(True)
        self.viewport().setAcceptDrops(True)
        self.setDropIndicatorShown(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragDrop)
        self.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.setDragDropOverwriteMode(False)
        self.setAlternatingRowColors(True)
        self.setShowGrid(False)
        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.verticalHeader().hide()
        self.verticalHeader().setDefaultSectionSize(44)
        self.setIconSize(QSize(18, 18))
        self.horizontalHeader().setHighlightSections(False)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._on_context_menu)
        table_model.modelReset.connect(self._after_reset)
        self._current_id: int | None = None
        self._column_widths: dict[int, int] = {}
        self.selectionModel().selectionChanged.connect(self._on_selection_changed)
        self._after_reset()

    # --- selection --------------------------------------------------------------------
    def selected_ids(self) -> list[int]:
        rows = sorted({i.row() for i in self.selectionModel().selectedRows()})
        return [m.id for r in rows if (m := self.table_model.model_at(r)) is not None]

    def current_id(self) -> int | None:
        return self._current_id

    def select_id(self, model_id: int | None) -> None:
        row = self.table_model.row_of(model_id) if model_id is not None else -1
        if row < 0:
            self.clearSelection()
            return
        self.selectRow(row)

    def _on_selection_changed(self) -> None:
        ids = self.selected_ids()
        new = ids[0] if ids else None
        if new != self._current_id:
            self._current_id = new
            self.sig_current_changed.emit(new)

    def _after_reset(self) -> None:
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setMinimumSectionSize(44)
        if self.table_model.columnCount() > 0:
            header.setSectionResizeMode(COL_NAME, QHeaderView.ResizeMode.Stretch)
            metrics = self.fontMetrics()
            widths = {COL_FORMAT: "safetensors", COL_PARAMS: "123 M", COL_SIZE: "99.9 MiB", COL_DTYPE: "bfloat16"}
            for col in range(1, self.table_model.columnCount()):
                sample = widths.get(col, "-10.000")
                title = str(self.table_model.headerData(col, Qt.Orientation.Horizontal))
                width = max(metrics.horizontalAdvance(sample), metrics.horizontalAdvance(title) + 6) + 12
                header.resizeSection(col, width)
                self._column_widths[col] = width  # a hidden section reports 0; this is its size when shown
        for col in (COL_FORMAT, COL_DTYPE):  # shown under the name (see NameDelegate)
            self.setColumnHidden(col, True)
        self._fit_columns()
        previous = self._current_id
        self._current_id = None
        if previous is not None and self.table_model.row_of(previous) >= 0:
            self.select_id(previous)
        self._on_selection_changed()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._fit_columns()

    def _fit_columns(self) -> None:
        """Give the names room first: fold Size, then Params, while the name column would be too narrow."""
        if self.table_model.columnCount() <= COL_NAME:
            return
        header = self.horizontalHeader()
        others = sum(header.sectionSize(c) for c in range(self.table_model.columnCount())
                     if c != COL_NAME and c not in FOLDING_COLUMNS and not self.isColumnHidden(c))
        room = self.viewport().width() - others
        for col in reversed(FOLDING_COLUMNS):  # Params is kept longer than Size
            width = self._column_widths.get(col, header.sectionSize(col))
            fits = room - width >= NAME_MIN_WIDTH
            if self.isColumnHidden(col) == fits:
                self.setColumnHidden(col, not fits)
                if fits:
                    header.resizeSection(col, width)
            if fits:
                room -= width

    # --- drops from a file manager ----------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            super().dragMoveEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        paths = paths_from_mime(event.mimeData())
        if paths:
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
            self.sig_files_dropped.emit(paths)
            return
        super().dropEvent(event)

    # --- menu -------------------------------------------------------------------------
    def _on_context_menu(self, pos: QPoint) -> None:
        self.build_context_menu(self.indexAt(pos)).popup(self.viewport().mapToGlobal(pos))

    def build_context_menu(self, index) -> QMenu:  # noqa: ANN001 - a QModelIndex
        """The right-click menu for the row at ``index`` (an invalid index: the empty area)."""
        menu = QMenu(self)
        style = self.style()
        if index.isValid():
            model = self.table_model.model_at(index.row())
            if model is not None and model.id not in self.selected_ids():
                self.selectRow(index.row())
            if model is not None:
                is_base = model.id == self.table_model.session.base_id
                act = menu.addAction("Clear base" if is_base else "Use as base model")
                act.triggered.connect(lambda: self.sig_base_requested.emit(None if is_base else model.id))
                ids = self.selected_ids()
                include = not model.in_models
                inputs = menu.addAction("Merge it too (use as an input)" if include else "Leave out of the merge")
                inputs.triggered.connect(lambda: self.sig_inputs_requested.emit(ids, include))
                reveal = menu.addAction(style.standardIcon(QStyle.StandardPixmap.SP_DirOpenIcon), "Open containing folder")
                reveal.triggered.connect(lambda: self.sig_reveal_requested.emit(model.id))
                menu.addSeparator()
            pair = self.selected_ids()
            if len(pair) == 2:
                compare = menu.addAction("Compare the two (difference per layer, scores side by side)")
                compare.triggered.connect(lambda: self.sig_compare_requested.emit(pair))
                align = menu.addAction("Align the second to the first (Permutations)")
                align.triggered.connect(lambda: self.sig_align_requested.emit(pair))
                menu.addSeparator()
            for extend in self.menu_extensions:  # actions other modules add (LoRA adapters)
                extend(menu, self.selected_ids())
            remove = QAction(style.standardIcon(QStyle.StandardPixmap.SP_TrashIcon), "Remove", menu)
            remove.setShortcut("Delete")
            remove.triggered.connect(lambda: self.sig_remove_requested.emit(self.selected_ids()))
            menu.addAction(remove)
        else:
            hint = menu.addAction("Drop files here, or use File ▸ Open…")
            hint.setEnabled(False)
        return menu

    # --- empty state ------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        super().paintEvent(event)
        if self.table_model.rowCount() == 0:
            painter = QPainter(self.viewport())
            painter.setPen(self.palette().placeholderText().color())
            painter.drawText(self.viewport().rect(), Qt.AlignmentFlag.AlignCenter, EMPTY_TEXT)
            painter.end()


def preview() -> None:  # pragma: no cover - a manual look
    import sys

    from merge_studio.gui.session import Session

    app = QApplication.instance() or QApplication(sys.argv)
    view = CheckpointList(CheckpointTableModel(Session()))
    view.resize(600, 300)
    view.show()
    app.exec()


if __name__ == "__main__":  # pragma: no cover
    preview()
