"""Per-model coefficients, edited in place in a table.

``CoefficientDelegate`` puts the same editors the parameter form uses into table
cells (a plain spin box instead of a slider: cells are narrow).
``CoefficientTable`` is a second view of the model list showing only names and
per-model parameters, for the method panel.
"""

from __future__ import annotations

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QPersistentModelIndex, QSize, Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QStyledItemDelegate, QStyleOptionViewItem, QTableView, QWidget

from merge_studio.gui.forms.field_widgets import FieldEditor, FloatEditor, SliderEditor, editor_class
from merge_studio.gui.views.checkpoint_model import FIXED_COLUMNS, COL_NAME, CheckpointTableModel


class CoefficientDelegate(QStyledItemDelegate):
    """Edits a per-model parameter cell with the editor its field declares."""

    def __init__(self, table_model: CheckpointTableModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._model = table_model

    def _facts(self, index: QModelIndex | QPersistentModelIndex):
        col = index.column() - len(FIXED_COLUMNS)
        facts = self._model.param_facts
        return facts[col] if 0 <= col < len(facts) else None

    def createEditor(self, parent: QWidget, option: QStyleOptionViewItem, index) -> QWidget:  # noqa: N802
        facts = self._facts(index)
        if facts is None:
            return super().createEditor(parent, option, index)
        cls = editor_class(facts)
        if cls is SliderEditor:
            cls = FloatEditor
        editor = cls(facts, parent)
        editor.setAutoFillBackground(True)
        return editor

    def setEditorData(self, editor: QWidget, index) -> None:  # noqa: N802
        if isinstance(editor, FieldEditor):
            value = index.data(Qt.ItemDataRole.EditRole)
            if value is not None and editor.accepts(value):
                editor.set_value(value)
        else:
            super().setEditorData(editor, index)

    def setModelData(self, editor: QWidget, model: QAbstractItemModel, index) -> None:  # noqa: N802
        if isinstance(editor, FieldEditor):
            model.setData(index, editor.value(), Qt.ItemDataRole.EditRole)
        else:
            super().setModelData(editor, model, index)


class CoefficientTable(QTableView):
    """The models and their per-model parameters; hidden columns keep it compact."""

    def __init__(self, table_model: CheckpointTableModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("coefficient_table")
        self.setModel(table_model)
        self.table_model = table_model
        self.setItemDelegate(CoefficientDelegate(table_model, self))
        self.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.EditKeyPressed
            | QAbstractItemView.EditTrigger.AnyKeyPressed
            | QAbstractItemView.EditTrigger.SelectedClicked
        )
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectItems)
        self.verticalHeader().hide()
        self.verticalHeader().setDefaultSectionSize(26)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.setCornerButtonEnabled(False)
        self.problem: str | None = None
        table_model.modelReset.connect(self._hide_fixed_columns)
        self._hide_fixed_columns()

    def sizeHint(self) -> QSize:  # noqa: N802
        """Tall enough for the rows (up to eight), so the panel does not waste space."""
        rows = min(max(self.table_model.rowCount(), 2), 8)
        height = self.horizontalHeader().height() + rows * self.verticalHeader().defaultSectionSize() + 4
        return QSize(super().sizeHint().width(), height)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(120, self.horizontalHeader().height() + 2 * self.verticalHeader().defaultSectionSize() + 4)

    def _hide_fixed_columns(self) -> None:
        self.updateGeometry()
        header = self.horizontalHeader()
        for col in range(self.table_model.columnCount()):
            self.setColumnHidden(col, 0 < col < len(FIXED_COLUMNS))
        if self.table_model.columnCount() > 0:
            header.setSectionResizeMode(COL_NAME, QHeaderView.ResizeMode.Stretch)
        for col in range(len(FIXED_COLUMNS), self.table_model.columnCount()):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)

    def set_problem(self, problem: str | None) -> None:
        """Frame the table in red, with the reason in its tooltip, while its values cannot be merged."""
        self.problem = problem
        self.setStyleSheet("QTableView#coefficient_table { border: 2px solid #c0392b; }" if problem else "")
        self.setToolTip(problem or "")

    def has_columns(self) -> bool:
        """Whether the current method has per-model parameters at all."""
        return bool(self.table_model.param_facts)
