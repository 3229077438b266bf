"""The best trials of a search in a table: trial number, objective values, the numbers it drew.

It selects the best trial while trials arrive, until the user picks one; then it keeps
that trial selected as better ones are added above it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem, QWidget


class BestTrialsTable(QTableWidget):
    sig_chosen = Signal(object)
    """The selected trial's number (``None`` when nothing is selected)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, 3, parent)
        self.setHorizontalHeaderLabels(["trial", "objective", "parameters"])
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().hide()
        self.horizontalHeader().setStretchLastSection(True)
        self.follow_best = True
        self._refreshing = False
        self.itemSelectionChanged.connect(self._on_selection)

    def reset(self) -> None:
        self.follow_best = True
        self.setRowCount(0)

    def selected_number(self) -> int | None:
        rows = self.selectionModel().selectedRows() if self.selectionModel() else []
        item = self.item(rows[0].row(), 0) if rows else None
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def show_trials(self, trials: Sequence[Any], objective_headers: Sequence[str]) -> None:
        """Show ``trials`` (best first); keeps the user's choice, else selects the first."""
        keep = None if self.follow_best else self.selected_number()
        self._refreshing = True
        self.blockSignals(True)
        self.setColumnCount(2 + len(objective_headers))
        self.setHorizontalHeaderLabels(["trial", *objective_headers, "parameters"])
        self.setRowCount(len(trials))
        for row, t in enumerate(trials):
            item = QTableWidgetItem(str(t.number))
            item.setData(Qt.ItemDataRole.UserRole, t.number)
            self.setItem(row, 0, item)
            for j, v in enumerate(t.values):
                self.setItem(row, 1 + j, QTableWidgetItem(f"{v:.4f}"))
            params = ", ".join(f"{k}={v:.3g}" for k, v in t.params.items())
            cell = QTableWidgetItem(params)
            cell.setToolTip(params)
            self.setItem(row, 1 + len(objective_headers), cell)
        self.clearSelection()
        rows = [r for r, t in enumerate(trials) if keep is not None and t.number == keep]
        if rows or trials:
            self.selectRow(rows[0] if rows else 0)
        self.resizeColumnsToContents()
        self.blockSignals(False)
        self._on_selection()
        self._refreshing = False

    def _on_selection(self) -> None:
        if not self._refreshing:
            self.follow_best = False  # the user chose a trial: keep it while better ones arrive
        self.sig_chosen.emit(self.selected_number())
