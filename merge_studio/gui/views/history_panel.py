"""The History tab: every recorded merge; re-open its recipe, load its output, compare two.

The records come from :mod:`merge_studio.core.history` (the same file
``merge-studio history`` reads); this view only lists and shows them.
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from merge_studio.core.history import HistoryRecord, load_history, side_by_side

COLUMNS = ("Date", "Method", "Models", "Output", "Time", "Status")
MAX_SHOWN = 500
STATUS_COLORS = {"ok": "#1e8449", "failed": "#c0392b", "cancelled": "#b9770e"}
CHANGED = QColor(255, 196, 0, 60)


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


class HistoryPanel(QWidget):
    """A table of merges (newest first) over the selected one's details, or two recipes side by side."""

    sig_open_recipe = Signal(object)
    """A :class:`HistoryRecord` whose recipe should fill the form."""
    sig_load_output = Signal(object)
    """A list of output paths to add to the model list."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("history_panel")
        self.records: list[HistoryRecord] = []
        self._stale = True

        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setObjectName("history_table")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        header = self.table.horizontalHeader()
        for col in range(len(COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._on_table_selection_changed)
        self.table.itemDoubleClicked.connect(lambda _item: self._on_open_clicked())

        self.open_button = QPushButton("Open recipe", self)
        self.open_button.setToolTip("Fill the models, method, parameters and output from this merge's recipe")
        self.open_button.clicked.connect(self._on_open_clicked)
        self.load_button = QPushButton("Load output", self)
        self.load_button.setToolTip("Add the merged model to the model list")
        self.load_button.clicked.connect(self._on_load_clicked)
        self.compare_button = QPushButton("Compare", self)
        self.compare_button.setToolTip("Select two merges (Ctrl+click) to see their recipes side by side")
        self.compare_button.clicked.connect(self.compare_selected)
        refresh = QPushButton("Refresh", self)
        refresh.setObjectName("flat_button")
        refresh.clicked.connect(self.refresh)
        self.count_label = QLabel(self)
        self.count_label.setObjectName("muted")
        buttons = QHBoxLayout()
        buttons.setContentsMargins(8, 6, 8, 0)
        for b in (self.open_button, self.load_button, self.compare_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.count_label)
        buttons.addWidget(refresh)

        self.details = QTextBrowser(self)
        self.details.setObjectName("history_details")
        self.details.setOpenLinks(False)
        self.diff = QTableWidget(0, 2, self)
        self.diff.setObjectName("history_diff")
        self.diff.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.diff.verticalHeader().setVisible(False)
        self.diff.setWordWrap(False)
        self.diff.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # paths differ at their ends
        self.diff.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.TypeWriter)
        self.diff.setFont(mono)
        self.bottom = QStackedWidget(self)
        self.bottom.addWidget(self.details)
        self.bottom.addWidget(self.diff)

        split = self.split = QSplitter(Qt.Orientation.Horizontal, self)  # wide and short at the bottom
        split.addWidget(self.table)
        split.addWidget(self.bottom)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 1)
        split.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(buttons)
        layout.addWidget(split, 1)
        self._on_table_selection_changed()

    def set_orientation(self, orientation: Qt.Orientation) -> None:
        """List beside details in a bottom dock; list over details in a side one."""
        self.split.setOrientation(orientation)

    # --- records ------------------------------------------------------------------------
    def mark_stale(self) -> None:
        """A merge was recorded: reread when next shown (now, if on screen)."""
        self._stale = True
        if self.isVisible():
            self.refresh()

    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        if self._stale:
            self.refresh()

    def refresh(self) -> None:
        self._stale = False
        self.records = load_history()[:MAX_SHOWN]
        self.table.setRowCount(len(self.records))
        for row, r in enumerate(self.records):
            out = _short(Path(r.output).name) if r.output else "—"
            cells = (r.when, r.method, ", ".join(_short(n) for n in r.model_names), out, _duration(r.seconds), r.status)
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col == 2:
                    item.setToolTip("\n".join(m["path"] for m in r.models))
                elif col == 3:
                    item.setToolTip("\n".join(r.outputs) or "no output")
                elif col == 5:
                    item.setForeground(QBrush(QColor(STATUS_COLORS.get(r.status, "#000"))))
                    if r.error:
                        item.setToolTip(r.error)
                self.table.setItem(row, col, item)
        self.count_label.setText(f"{len(self.records)} merge{'s' if len(self.records) != 1 else ''}")
        if self.records and not self.table.selectedItems():
            self.table.selectRow(0)
        self._on_table_selection_changed()

    def selected(self) -> list[HistoryRecord]:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        return [self.records[r] for r in rows if r < len(self.records)]

    # --- actions -------------------------------------------------------------------------
    def _on_table_selection_changed(self) -> None:
        chosen = self.selected()
        one = len(chosen) == 1
        self.open_button.setEnabled(one)
        self.load_button.setEnabled(one and any(Path(p).exists() for p in chosen[0].outputs))
        self.compare_button.setEnabled(len(chosen) == 2)
        if one:
            self.show_details(chosen[0])
        elif len(chosen) == 2:
            self.compare_selected()
        else:
            hint = ("No merges recorded yet: merges run here or with 'merge-studio merge' appear in this list."
                    if not self.records else "Select one merge to see how it was made, or two to compare them.")
            self.details.setHtml(f"<p style='color:gray'>{hint}</p>")
            self.bottom.setCurrentWidget(self.details)

    def show_details(self, r: HistoryRecord) -> None:
        e = html.escape
        rows = [f"<b>{e(r.method)}</b> · {e(r.when)} · {e(_duration(r.seconds))} · "
                f"<span style='color:{STATUS_COLORS.get(r.status, '')}'>{e(r.status)}</span> · from the {e(r.source)}"]
        if r.error:
            rows.append(f"<span style='color:{STATUS_COLORS['failed']}'>{e(r.error)}</span>")
        rows.append("<b>Inputs</b>")
        for m in r.models:
            digest = m.get("sha256")
            tag = " (base)" if m.get("base") else ""
            rows.append(f"&nbsp;&nbsp;{e(m['path'])}{tag}" + (f" <tt>sha256 {e(digest[:16])}…</tt>" if digest else ""))
        rows.append("<b>Output</b> " + (", ".join(e(p) for p in r.outputs) or "none"))
        if r.evaluation:
            rows.append("<b>Evaluation</b> " + ", ".join(f"{e(str(k))} = {e(_fmt(v))}" for k, v in r.evaluation.items()))
        rows.append(f"<b>Recipe</b><pre>{e(r.recipe)}</pre>")
        self.details.setHtml("<br>".join(rows))
        self.bottom.setCurrentWidget(self.details)

    def compare_selected(self) -> None:
        chosen = self.selected()
        if len(chosen) == 2:
            self.compare(chosen[1], chosen[0])  # older on the left

    def compare(self, left: HistoryRecord, right: HistoryRecord) -> list[tuple[str, str, bool]]:
        """Both recipes side by side (then the inputs' hashes, the outcome and any scores),
        differing lines tinted; returns the rows shown."""
        rows = side_by_side(_compared_text(left), _compared_text(right))
        self.diff.setRowCount(len(rows))
        self.diff.setHorizontalHeaderLabels([f"{left.when} · {left.method}", f"{right.when} · {right.method}"])
        for i, (a, b, changed) in enumerate(rows):
            for col, text in enumerate((a, b)):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                if changed:
                    item.setBackground(QBrush(CHANGED))
                self.diff.setItem(i, col, item)
        self.diff.resizeRowsToContents()
        self.bottom.setCurrentWidget(self.diff)
        return rows

    def _on_open_clicked(self) -> None:
        chosen = self.selected()
        if len(chosen) == 1:
            self.sig_open_recipe.emit(chosen[0])

    def _on_load_clicked(self) -> None:
        chosen = self.selected()
        if len(chosen) == 1:
            self.sig_load_output.emit([Path(p) for p in chosen[0].outputs if Path(p).exists()])


def _compared_text(r: HistoryRecord) -> str:
    """The recipe, then what a recipe does not hold: the inputs' hashes, the outcome, the scores."""
    lines = [r.recipe.rstrip(), "# inputs"]
    lines += [f"{m.get('name', m['path'])}: sha256 {m.get('sha256', '?')[:16]}" for m in r.models]
    lines += ["# outcome", f"status: {r.status}", f"time: {_duration(r.seconds)}"]
    if r.bytes_written:
        lines.append(f"written: {r.bytes_written:,} bytes")
    if r.evaluation:
        lines.append("# evaluation")
        lines += [f"{k}: {_fmt(v)}" for k, v in sorted(r.evaluation.items())]
    return "\n".join(lines)


def _short(name: str) -> str:
    """A file name without the ever-present ``.safetensors`` (the full path is in the tooltip)."""
    return name.removesuffix(".safetensors")


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
