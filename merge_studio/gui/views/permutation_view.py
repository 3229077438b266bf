"""The Permutations tab: what an alignment moved, group by group.

Left: the permutation groups (units, share moved) and, in a distinct colour, the
points the spec could not permute; below them the selected group's member
tensors. Right: the selected group's permutation matrix and its similarity matrix
before and after reordering, the convergence of the objective, and the share moved
per group. Every picture is drawn by :mod:`merge_studio.plots.permutations` and can
be saved. The view gets a report (and a function giving similarity matrices); it
computes nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMessageBox,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from merge_studio.core.rebasin.report import blocked_layers, layer_fractions, layer_of
from merge_studio.gui.plot_canvas import BackgroundCanvas
from merge_studio.gui.views.empty_state import EmptyState
from merge_studio.plots.permutations import (
    BLOCKED_COLOUR,
    plot_moved_fraction,
    plot_objective,
    plot_permutation_matrix,
    plot_similarity,
    save_axes_figure,
)
from merge_studio.errors import MergeStudioError

MatricesProvider = Callable[[str], Any]  # group name -> similarity matrix (n × n) or None
GROUP_ROLE = Qt.ItemDataRole.UserRole
OVERLAY_NAME = "units permuted"
NARROW_WIDTH = 760  # below this the pictures go under the group list
MIN_CANVAS_SIZE = (240, 220)  # smaller, the axes' labels no longer fit (the tab scrolls instead)
STACK_RATIO = 0.55  # a group canvas taller than this times its width stacks its pictures in two rows


def layer_overlay(report: Mapping[str, Any]) -> dict[str, float]:
    """Per layer, the share of its units permuted, for ``GraphView.set_overlay``.

    Layers the spec could not permute are ``nan`` (drawn as "no value"); pass
    :func:`layer_marks` to colour them apart.
    """
    return layer_fractions(report)


def layer_marks(report: Mapping[str, Any]) -> dict[str, str]:
    """Layers that could not be permuted, each with the colour that marks them."""
    return dict.fromkeys(blocked_layers(report), BLOCKED_COLOUR)


AGREE_TIP = ("Share of this group's units that weight matching and activation matching sent to the same unit of B: "
             "high means both read the models alike; low means trust the one whose merge scores better")


def _units_text(group: Mapping[str, Any]) -> str:
    heads = group.get("n_heads", 1)
    if heads <= 1:
        return str(group["size"])
    kv = group.get("kv_heads", heads)
    return f"{group['size']} · {heads} heads" + (f" / {kv} kv" if kv != heads else "")


def _method_text(report: Mapping[str, Any]) -> str:
    """Which matching was used and, after Auto, why (the midpoint losses of both)."""
    method = report.get("method")
    if method not in ("weight", "activation"):
        return ""
    names = {"weight": "weight matching", "activation": "activation matching"}
    candidates = report.get("candidates") or {}
    losses = {m: c.get("midpoint_loss") for m, c in candidates.items() if c.get("midpoint_loss") is not None}
    if report.get("choice") == "auto" and len(losses) > 1:
        other = next(m for m in losses if m != method)
        return (f"Auto kept {names[method]}: loss at the midpoint {losses[method]:.3g} "
                f"against {losses[other]:.3g} for {names[other]}")
    line = f"Aligned by {names[method]}"
    if report.get("note"):
        line += f" ({report['note']})"
    return line


def group_for_layer(report: Mapping[str, Any], layer: str) -> str | None:
    """The group holding a layer's output units (else any group touching it), for graph clicks."""
    fallback = None
    for g in report.get("groups", []):
        for m in g["members"]:
            if layer_of(m["tensor"]) == layer or m["tensor"] == layer:
                if m["axis"] == 0 and m["offset"] == 0:
                    return g["name"]
                fallback = fallback or g["name"]
    return fallback


def _fit_chars(axes_width_px: float) -> int | None:
    """Characters per title line for pictures this wide; ``None``: they have room as drawn."""
    return None if axes_width_px >= 330 else max(14, int(axes_width_px / 8.5))


def _fit_text(fig: Figure, axes_width_px: float) -> None:
    """Smaller, wrapped titles and labels when each picture gets little room (the tab beside the list)."""
    chars = _fit_chars(axes_width_px)
    if chars is None:
        return
    for ax in fig.axes:
        legend = ax.get_legend()
        title = ax.title.get_text()
        if legend is not None:  # no room below the picture: say it in the title
            title += " · " + ", ".join(f"{t.get_text()}: {'blue' if i == 0 else 'grey'}" for i, t in enumerate(legend.get_texts()))
            legend.remove()
        ax.title.set_text(textwrap.fill(title, chars))
        ax.title.set_fontsize(7.5)
        for label in (ax.xaxis.label, ax.yaxis.label):
            label.set_text(textwrap.fill(label.get_text(), chars))
            label.set_fontsize(7.5)
        ax.tick_params(labelsize=7)


class _Canvas(BackgroundCanvas):
    """Draws off the GUI thread; never smaller than a readable picture (the tab scrolls instead)."""

    def __init__(self, figsize: tuple[float, float]) -> None:
        super().__init__(Figure(figsize=figsize, layout="constrained"))
        self.setMinimumSize(*MIN_CANVAS_SIZE)


class PermutationView(QWidget):
    """Inspect an alignment: groups, their matrices, convergence, and what stayed put."""

    sig_group_selected = Signal(str)
    sig_saved = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._report: dict[str, Any] | None = None
        self._provider: MatricesProvider | None = None
        self._matrices: dict[str, np.ndarray | None] = {}
        self._current: str | None = None

        self.empty = EmptyState(
            "No alignment yet",
            "Align two models with weight matching (or open a permutation report) to see which hidden units moved.",
            self,
        )
        self.groups = QTreeWidget(self)
        self.groups.setObjectName("permutation_groups")
        self.groups.setHeaderLabels(["Group", "Units", "Moved"])
        self.groups.setRootIsDecorated(False)
        self.groups.itemSelectionChanged.connect(self._on_groups_selection_changed)
        self.members = QListWidget(self)
        self.members.setObjectName("group_members")
        self.summary = QLabel(self)
        self.summary.setWordWrap(True)
        left = QWidget(self)
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.summary)
        left_layout.addWidget(self.groups, 3)
        left_layout.addWidget(QLabel("Tensors reordered by the selected group:", left))
        left_layout.addWidget(self.members, 1)

        self.group_canvas = _Canvas((9, 3.2))
        self.group_canvas.setMinimumHeight(300)  # narrow tabs stack the pictures (see _group_layout)
        self.group_canvas.mpl_connect("resize_event", self._on_group_canvas_resized)
        self._fitted: tuple[bool, int, int | None] | None = None  # the layout the group pictures were drawn for
        self.convergence_canvas = _Canvas((6, 3.5))
        self.overview_canvas = _Canvas((6, 4))
        self.tabs = QTabWidget(self)
        self.tabs.addTab(self.group_canvas, "Group matrices")
        self.tabs.addTab(self.convergence_canvas, "Convergence")
        self.tabs.addTab(self.overview_canvas, "Units moved")
        self.save_button = QPushButton("Export…", self)
        self.save_button.setToolTip("The picture as PNG or SVG, or its numbers as CSV")
        self.save_button.clicked.connect(self._on_save_button_clicked)
        right = QWidget(self)
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.tabs)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.save_button)
        right_layout.addLayout(buttons)

        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 3)
        splitter.setChildrenCollapsible(False)
        self.splitter = splitter
        self.stack = QStackedWidget(self)
        self.stack.addWidget(self.empty)
        self.stack.addWidget(splitter)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.stack)

    def resizeEvent(self, event) -> None:  # noqa: ANN001, N802 - Qt override
        """Narrow (beside the model list): the groups above the pictures, so the matrices get the width."""
        super().resizeEvent(event)
        narrow = self.width() < NARROW_WIDTH
        wanted = Qt.Orientation.Vertical if narrow else Qt.Orientation.Horizontal
        if self.splitter.orientation() != wanted:
            self.splitter.setOrientation(wanted)
            self.splitter.setStretchFactor(0, 2 if narrow else 1)
            self.splitter.setStretchFactor(1, 3)
            total = self.height() if narrow else self.width()
            self.splitter.setSizes([int(total * 0.42), int(total * 0.58)] if narrow else [int(total * 0.3), int(total * 0.7)])

    # -- public API ---------------------------------------------------------------------
    @property
    def report(self) -> dict[str, Any] | None:
        return self._report

    @property
    def current_group(self) -> str | None:
        return self._current

    def set_report(self, report: Mapping[str, Any] | None, matrices_provider: MatricesProvider | None = None) -> None:
        """Show an alignment report; ``matrices_provider(group)`` gives similarity matrices on demand."""
        self._report = dict(report) if report is not None else None
        self._provider = matrices_provider
        self._matrices = {}
        self._current = None
        if self._report is None:
            self.groups.clear()
            self.members.clear()
            self.stack.setCurrentWidget(self.empty)
            return
        self._fill_groups(self._report)
        self._draw_convergence(self._report)
        self._draw_overview(self._report)
        self.stack.setCurrentIndex(1)
        names = [g["name"] for g in self._report.get("groups", [])]
        if names:
            self.select_group(names[0])
        else:
            self._draw_group(None)

    def select_group(self, name: str) -> bool:
        """Open a group's matrices (e.g. after a click on its layer in the graph)."""
        for i in range(self.groups.topLevelItemCount()):
            item = self.groups.topLevelItem(i)
            if item.data(0, GROUP_ROLE) == name:
                self.groups.setCurrentItem(item)  # emits through the selection signal
                if self._current != name:
                    self._show_group(name)
                return True
        return False

    def select_layer(self, layer: str) -> bool:
        """Open the group of a layer chosen elsewhere (the graph view's ``sig_layer_selected``)."""
        if self._report is None:
            return False
        name = group_for_layer(self._report, layer)
        return self.select_group(name) if name else False

    def figure(self, which: str) -> Figure:
        """The figure behind a picture: ``group``, ``convergence`` or ``overview`` (with every queued change made)."""
        canvas = {"group": self.group_canvas, "convergence": self.convergence_canvas, "overview": self.overview_canvas}[which]
        canvas.flush()
        return canvas.figure

    def save_picture(self, which: str, path: str | Path) -> Path:
        saved = save_axes_figure(self.figure(which), path)
        self.sig_saved.emit(str(saved))
        return saved

    # -- filling --------------------------------------------------------------------------
    def _fill_groups(self, report: Mapping[str, Any]) -> None:
        self.groups.blockSignals(True)
        self.groups.clear()
        agree = report.get("agreement") or {}
        columns = ["Group", "Units", "Moved"] + (["Agree"] if agree else [])
        self.groups.setHeaderLabels(columns)
        self.groups.setColumnCount(len(columns))
        for g in report.get("groups", []):
            item = QTreeWidgetItem([g["name"], _units_text(g), f"{g['moved_fraction']:.0%}"])
            item.setData(0, GROUP_ROLE, g["name"])
            item.setToolTip(0, "\n".join(sorted({m["tensor"] for m in g["members"]})))
            if g.get("fixed_within"):
                item.setToolTip(1, "Whole heads move; the order inside each head stays (rotary embeddings)")
            if agree and g["name"] in agree:
                item.setText(3, f"{agree[g['name']]:.0%}")
                item.setToolTip(3, AGREE_TIP)
            self.groups.addTopLevelItem(item)
        blocked = QBrush(QColor(BLOCKED_COLOUR))
        for point in report.get("unpermuted", []):
            item = QTreeWidgetItem([f"✗ {point['node']}", "", "not permuted"])
            item.setToolTip(0, f"{point['reason']}\nkept in place: {', '.join(point.get('tensors', [])) or '—'}")
            for col in range(len(columns)):
                item.setForeground(col, blocked)
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsSelectable)
            self.groups.addTopLevelItem(item)
        for col in range(len(columns)):
            self.groups.resizeColumnToContents(col)
        self.groups.blockSignals(False)
        n_groups = len(report.get("groups", []))
        units = sum(g["size"] for g in report.get("groups", []))
        moved = sum(g["size"] * g["moved_fraction"] for g in report.get("groups", []))
        diff = report.get("max_output_difference")
        text = f"{n_groups} groups, {moved / units:.0%} of {units} units moved" if units else "No permutation groups"
        if diff is not None:
            text += f"; outputs unchanged (max difference {diff:.1e})"
        if report.get("unpermuted"):
            text += f"; {len(report['unpermuted'])} point(s) could not be permuted (in orange)"
        if report.get("shown_model"):  # one model of several (MergeMany)
            text = f"{report['shown_model']}: {text}"
        method_line = _method_text(report)
        self.summary.setText(f"{text}\n{method_line}" if method_line else text)

    def _show_group(self, name: str) -> None:
        self._current = name
        group = next(g for g in self._report.get("groups", []) if g["name"] == name)  # type: ignore[union-attr]
        self.members.clear()
        for m in group["members"]:
            where = f"axis {m['axis']}"
            if m["offset"] or m.get("block", 1) > 1:
                where += f", from {m['offset']}, {m['n']} units × {m['block']}"
            self.members.addItem(f"{m['tensor']}  ({where})")
        self._draw_group(group)
        self.sig_group_selected.emit(name)

    def _similarity(self, name: str) -> np.ndarray | None:
        if name not in self._matrices:
            value = self._provider(name) if self._provider is not None else None
            self._matrices[name] = None if value is None else np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
        return self._matrices[name]

    def _draw_group(self, group: Mapping[str, Any] | None) -> None:
        # Built on the render thread with the drawing: the similarity matrices and the artists of a
        # 512-unit group took up to 200 ms, a stall of the window when done here.
        self.group_canvas.edit(lambda _fig: self._draw_group_figure(group))

    def _draw_group_figure(self, group: Mapping[str, Any] | None) -> None:
        fig = self.group_canvas.figure
        fig.clear()
        if group is None:
            ax = fig.add_subplot()
            ax.axis("off")
            ax.text(0.5, 0.5, "nothing was permuted", ha="center", va="center")
        else:
            sim = self._similarity(group["name"])
            layout = self._group_layout(sim is not None)
            stacked, columns, _chars = layout
            if stacked:  # the permutation above, the two similarity matrices below
                grid = fig.subplot_mosaic([["perm", "perm"], ["before", "after"]])
                axes = [grid["perm"], grid["before"], grid["after"]]
            else:
                axes = list(fig.subplots(1, 3 if sim is not None else 1, squeeze=False)[0])
            plot_permutation_matrix(axes[0], group["perm"])
            if sim is not None:
                plot_similarity(axes[1], sim, colorbar=False)
                plot_similarity(axes[2], sim, group["perm"])
            fig.suptitle(f"{group['name']}: {group['moved_fraction']:.0%} of {group['size']} units moved", fontsize=10)
            _fit_text(fig, self._group_size()[0] / columns)
            self._fitted = layout

    def _group_size(self) -> tuple[float, float]:
        """The group canvas's size in screen pixels, from its figure (the render thread may ask)."""
        fig = self.group_canvas.figure
        ratio = self.group_canvas.device_pixel_ratio or 1.0
        width, height = fig.get_size_inches() * fig.dpi / ratio
        return float(width), float(height)

    def _group_layout(self, with_similarity: bool) -> tuple[bool, int, int | None]:
        """(stacked, columns, title characters per line) for the canvas's current size.

        A canvas taller than about half its width (the tab beside the model list) puts
        the permutation above the similarity matrices, so each picture is twice as large.
        """
        width, height = self._group_size()
        stacked = with_similarity and height > STACK_RATIO * width
        columns = 2 if stacked else (3 if with_similarity else 1)
        return stacked, columns, _fit_chars(width / columns)

    def _draw_convergence(self, report: Mapping[str, Any]) -> None:
        def draw(fig: Figure) -> None:
            fig.clear()
            plot_objective(fig.add_subplot(), report.get("objective_per_sweep", []), initial=report.get("initial_objective"))

        self.convergence_canvas.edit(draw)

    def _draw_overview(self, report: Mapping[str, Any]) -> None:
        # One bar per layer: the canvas asks for the height they need (its tab scrolls), and the
        # bars are drawn on the render thread. Waiting here for a render in flight (``hold``)
        # stalled the window for as long as that render took.
        n = len(report.get("groups", [])) + len(blocked_layers(report))
        inches = max(3.0, min(12.0, 0.25 * n + 1))
        self.overview_canvas.setMinimumHeight(int(inches * self.overview_canvas.figure.dpi / self.overview_canvas.device_pixel_ratio))

        def draw(fig: Figure) -> None:
            fig.clear()
            plot_moved_fraction(fig.add_subplot(), report)

        self.overview_canvas.edit(draw)

    # -- slots ----------------------------------------------------------------------------
    @Slot()
    def _on_groups_selection_changed(self) -> None:
        items = self.groups.selectedItems()
        name = items[0].data(0, GROUP_ROLE) if items else None
        if name and name != self._current:
            self._show_group(name)

    def _on_group_canvas_resized(self, _event: object) -> None:
        """Re-fit the titles when the canvas width changes how they wrap: the first draw often
        happens before the window has its final size, and stale titles overlap."""
        if self._report is None or self._current is None:
            return
        with_similarity = sum(1 for ax in self.group_canvas.figure.axes if ax.images) > 1
        if self._group_layout(with_similarity) != self._fitted:
            self._draw_group(next(g for g in self._report.get("groups", []) if g["name"] == self._current))

    @Slot()
    def _on_save_button_clicked(self) -> None:
        from merge_studio.gui.plot_export import ask_export

        which = ("group", "convergence", "overview")[self.tabs.currentIndex()]
        suggested = f"{(self._current or 'permutation').replace('.', '_')}_{which}.png"
        canvas = {"group": self.group_canvas, "convergence": self.convergence_canvas, "overview": self.overview_canvas}[which]
        rows = self.permutation_rows if which == "group" else self.moved_rows if which == "overview" else None
        try:
            saved = ask_export(self, self.figure(which), suggested, rows=rows, canvas=canvas)
        except MergeStudioError as exc:
            QMessageBox.warning(self, "Export failed", str(exc))
            return
        if saved is not None:
            self.sig_saved.emit(str(saved))

    def permutation_rows(self) -> list[list[Any]]:
        """The shown group's permutation as CSV rows: which unit of B each unit of aligned B came from."""
        group = next((g for g in (self._report or {}).get("groups", []) if g["name"] == self._current), None)
        rows: list[list[Any]] = [["group", "unit of aligned B (= unit of A)", "unit of B"]]
        if group is not None:
            rows += [[group["name"], i, int(j)] for i, j in enumerate(group.get("perm", []))]
        return rows

    def moved_rows(self) -> list[list[Any]]:
        """Each group's size and share of units moved."""
        rows: list[list[Any]] = [["group", "units", "moved fraction"]]
        rows += [[g["name"], g.get("size"), g.get("moved_fraction")] for g in (self._report or {}).get("groups", [])]
        return rows


__all__ = ["PermutationView", "layer_overlay", "layer_marks", "group_for_layer", "OVERLAY_NAME"]
