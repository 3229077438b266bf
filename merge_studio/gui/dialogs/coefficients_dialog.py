"""A window showing the coefficients a data-aware merge learned (AdaMerging's λ per layer and model)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure
from PySide6.QtCore import QSize, Signal
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from merge_studio.gui.plot_canvas import BackgroundCanvas
from merge_studio.gui.plot_toolbar import PlotToolbar
from merge_studio.plots.coefficients import plot_coefficients


def learned_coefficients(report: object) -> tuple[dict[str, list[float]], list[str]] | None:
    """``(coefficients, model names)`` when a merge report carries learned coefficients."""
    if not isinstance(report, Mapping):
        return None
    table = report.get("coefficients")
    if not isinstance(table, Mapping) or not table:
        return None
    return {str(k): [float(x) for x in v] for k, v in table.items()}, [str(n) for n in report.get("models", [])]


def layer_means(coefficients: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Mean λ over models per layer (a tensor's name without its last part), for the graph overlay."""
    sums: dict[str, list[float]] = {}
    for name, values in coefficients.items():
        if name == "*" or not values:
            continue
        layer = name.rsplit(".", 1)[0] if "." in name else name
        sums.setdefault(layer, []).append(sum(values) / len(values))
    return {layer: sum(v) / len(v) for layer, v in sums.items()}


class CoefficientsDialog(QDialog):
    """Non-modal: the learned λ per layer (one line per model), with matplotlib's toolbar to save it.

    "Keep in the recipe" emits ``sig_keep`` with the table, for the window to set it as the
    method's ``coefficients`` parameter: a recipe saved then re-runs the merge without data.
    """

    sig_keep = Signal(object)

    def __init__(self, coefficients: Mapping[str, Sequence[float]], model_names: Sequence[str],
                 parent: QWidget | None = None, *, title: str = "Learned coefficients") -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.figure = Figure(figsize=(7, 3.6), layout="constrained")
        self.canvas = BackgroundCanvas(self.figure, self)
        self.canvas.setMinimumSize(420, 260)
        toolbar = PlotToolbar(self.canvas, self)
        toolbar.setIconSize(QSize(18, 18))
        note = QLabel("Written into the merged file's report. Keep them in the recipe to re-run this merge "
                      "without data (saved recipes then carry them).", self)
        note.setWordWrap(True)
        self.keep_button = QPushButton("Keep in the recipe", self)
        self.keep_button.clicked.connect(lambda: self.sig_keep.emit(dict(coefficients)))
        close = QPushButton("Close", self)
        close.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(note, 1)
        buttons.addWidget(self.keep_button)
        buttons.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(toolbar)
        layout.addWidget(self.canvas, 1)
        layout.addLayout(buttons)
        axes = self.figure.add_subplot()
        self.artists: list = []
        self.canvas.edit(lambda _f: self.artists.extend(plot_coefficients(axes, coefficients, model_names, title=title)))
        self.resize(760, 440)
