"""The Graph tab: an interactive layer graph, or the module tree when no architecture is known.

The view only shows what core jobs produce (:mod:`merge_studio.graph.jobs`); tracing
and Graphviz layout run on a worker thread through :class:`JobRunner`. The SVG from
Graphviz is drawn whole, and one transparent item per graph node sits on top of it
to take hover and clicks, so what you click is exactly what Graphviz drew.

Beside the graph (below it when the tab is narrow) a properties panel describes
the clicked node: module, tensors, statistics per loaded model and the overlay's
value. An overview in the corner shows where the view is in a large graph.
Overlays colour on a scale with a fixed meaning (see
:class:`~merge_studio.graph.overlay.OverlayScale`); "Stretch colours" spreads the
values over the whole map instead, and the legend says which.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QPen, QStandardItemModel
from PySide6.QtSvgWidgets import QGraphicsSvgItem
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QFileDialog, QGraphicsScene, QHBoxLayout,
    QInputDialog, QLabel, QLineEdit, QMenu, QSpinBox, QSplitter, QStackedWidget, QToolButton, QTreeView, QVBoxLayout,
    QWidget,
)

from merge_studio.core.arch import ZOO
from merge_studio.core.progress import CancelToken
from merge_studio.graph.jobs import GraphPicture, Overlay, iter_arch_picture, iter_checkpoint_picture
from merge_studio.graph.key_tree import KeyTreeNode, key_tree
from merge_studio.graph.model import GraphNode, ModuleGraph
from merge_studio.graph.overlay import OverlayScale
from merge_studio.gui.flow_layout import FlowLayout
from merge_studio.graph.render import INSTALL_HINT, render_png
from merge_studio.gui.views.graph_items import SELECT_PEN, NodeItem, ZoomView
from merge_studio.gui.views.graph_marks import SOURCE_COLOURS, Marks, iter_restyle, with_style
from merge_studio.gui.views.graph_minimap import GraphMinimap
from merge_studio.gui.views.graph_properties import GraphProperties, ModelsProvider
from merge_studio.gui.views.graph_scene import (
    PictureJob, PreparedPicture, SceneParts, item_rect, prepare_scene, with_scene,
)
from merge_studio.gui.views.graph_tree import PATH_ROLE, fill_tree_model
from merge_studio.gui.workers import JobRunner, JobWorker

EMPTY_TEXT = (
    "Load a checkpoint to see its structure: its layer graph when the architecture is known, "
    "otherwise the tree of modules read from its tensor names."
)
NO_OVERLAY = "No overlay"
SOURCE_OVERLAY = "source model"
NARROW_WIDTH = 760  # narrower than this, the properties panel goes under the graph


def _together(*widgets: QWidget) -> QWidget:
    """Widgets that stay on one line when the tool bar wraps (a label and its field)."""
    holder = QWidget()
    row = QHBoxLayout(holder)
    row.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        row.addWidget(widget)
    return holder


def _flow_holder(flow: FlowLayout, parent: QWidget) -> QWidget:
    holder = QWidget(parent)
    holder.setLayout(flow)
    return holder


class GraphView(QWidget):
    """Toolbar (depth, nesting, overlay, search, zoom, export) over the graph or the module tree."""

    sig_layer_selected = Signal(str)
    """The module path of a clicked node or tree row (``layer1.0.conv1``)."""
    sig_graph_ready = Signal()
    """A new picture (or tree) is on screen."""
    sig_failed = Signal(str)
    """Building or laying out failed; the message is also shown in the banner."""
    sig_exported = Signal(str)
    """A file was written by :meth:`export`."""
    sig_arch_chosen = Signal(str)
    """The user picked an architecture for the shown checkpoint (to remember it)."""

    def __init__(self, runner: JobRunner | None = None, parent: QWidget | None = None,
                 models_provider: ModelsProvider | None = None) -> None:
        super().__init__(parent)
        self._runner = runner or JobRunner(self)
        self._models_provider = models_provider
        self._worker: JobWorker | None = None
        self._source: Callable[[int, bool, Overlay | None], PictureJob] | None = None
        self._picture: GraphPicture | None = None
        self._items: dict[str, NodeItem] = {}
        self._overlays: dict[str, Overlay] = {}
        self._marks: dict[str, dict[str, str]] = {}  # overlay name -> layer -> colour
        self._scales: dict[str, tuple[float | None, float | None]] = {}  # overlay name -> (vmin, vmax) drawn
        self._meanings: dict[str, tuple[dict[str, float], str, OverlayScale]] = {}  # name -> (values, cmap, scale)
        self._matches: list[str] = []
        self._checkpoint: Any = None
        self._arch_by_path: dict[str, str] = {}
        self._overlay_jobs: dict[Any, tuple[str, str]] = {}
        self._tree: KeyTreeNode | None = None
        self._expanded: set[str] = set()  # repeated blocks the user asked to see layer by layer
        self._build_ui()
        self.clear()

    # --- layout ---------------------------------------------------------------------------
    def _build_ui(self) -> None:
        bar = FlowLayout()  # wraps onto a second line when the tab is narrow; no control is cut
        self.depth_spin = QSpinBox(minimum=0, maximum=12, value=3, toolTip="How many levels of submodules to open")
        self.nested_check = QCheckBox("Expand nested", toolTip="Draw opened modules as boxes around their layers")
        self.overlay_combo = QComboBox(toolTip="Colour layers by a per-layer value")
        self.overlay_combo.addItem(NO_OVERLAY)
        self.overlay_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.overlay_combo.setMinimumContentsLength(12)
        self.stretch_check = QCheckBox("Stretch colours", toolTip="Spread the overlay's values over the whole colour "
                                       "map (small differences look large) instead of its fixed scale")
        self.search_edit = QLineEdit(placeholderText="Find layer…", clearButtonEnabled=True)
        self.arch_button = QToolButton(text="Architecture", toolTip="Pick the model that gives this checkpoint its graph")
        self.arch_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.arch_button.setMenu(self._arch_menu())
        self.repeats_button = QToolButton(text="Repeated layers", toolTip="Draw a block of identical layers once, or each layer")
        self.repeats_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.repeats_button.setMenu(QMenu(self))
        self.repeats_button.hide()
        buttons = {}
        for key, text, tip in (
            ("zoom_in", "+", "Zoom in"), ("zoom_out", "−", "Zoom out"), ("fit", "Fit", "Fit the graph in the window"),
            ("svg", "SVG…", "Export the picture as SVG"), ("png", "PNG…", "Export the picture as PNG"),
        ):
            buttons[key] = QToolButton(text=text, toolTip=tip)
        self.zoom_in_button, self.zoom_out_button, self.fit_button = buttons["zoom_in"], buttons["zoom_out"], buttons["fit"]
        self.export_svg_button, self.export_png_button = buttons["svg"], buttons["png"]
        # two rows: beside the model list the tab is ~600 px wide, too narrow for one
        bar.addWidget(_together(QLabel("Depth"), self.depth_spin))
        for widget in (self.nested_check, self.arch_button, self.repeats_button):
            bar.addWidget(widget)
        bar.addWidget(_together(QLabel("Colour by"), self.overlay_combo))
        bar.addWidget(self.stretch_check)
        tools = QHBoxLayout()
        tools.addWidget(self.search_edit, 1)
        for button in buttons.values():
            tools.addWidget(button)

        self.banner = QLabel(wordWrap=True, textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
        self.banner.setStyleSheet("background:#fff4ce; border:1px solid #e0c36b; padding:6px; color:#3d3000;")
        self.status_label = QLabel()
        self.status_label.setStyleSheet("color:#5a6470;")

        self.scene = QGraphicsScene(self)
        self.graphics = ZoomView(self.scene)
        self.tree_model = QStandardItemModel(self)
        self.tree_view = QTreeView(uniformRowHeights=True, alternatingRowColors=False)
        self.tree_view.setModel(self.tree_model)
        self.empty_label = QLabel(EMPTY_TEXT, wordWrap=True, alignment=Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setStyleSheet("color:#6b7480; font-size:13px; padding:24px;")
        self.stack = QStackedWidget()
        for page in (self.empty_label, self.graphics, self.tree_view):
            self.stack.addWidget(page)
        self.minimap = GraphMinimap(self.graphics)
        self.properties = GraphProperties(self._runner, self._models_provider, self)
        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.setObjectName("graph_properties_split")
        self.splitter.addWidget(self.stack)
        self.splitter.addWidget(self.properties)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setCollapsible(0, False)

        layout = QVBoxLayout(self)
        layout.addWidget(_flow_holder(bar, self))
        layout.addLayout(tools)
        layout.addWidget(self.banner)
        layout.addWidget(self.splitter, 1)
        layout.addWidget(self.status_label)

        self.depth_spin.valueChanged.connect(self._on_options_changed)
        self.nested_check.toggled.connect(self._on_options_changed)
        self.overlay_combo.currentTextChanged.connect(self._on_overlay_combo_changed)
        self.stretch_check.toggled.connect(self._on_stretch_toggled)
        for bar_ in (self.graphics.horizontalScrollBar(), self.graphics.verticalScrollBar()):
            bar_.rangeChanged.connect(lambda *_: self.minimap.refresh())
        self.search_edit.textChanged.connect(self._on_search_changed)
        self.search_edit.returnPressed.connect(self._on_search_next)
        self.zoom_in_button.clicked.connect(lambda: (self.graphics.zoom(1.25), self.minimap.refresh()))
        self.zoom_out_button.clicked.connect(lambda: (self.graphics.zoom(0.8), self.minimap.refresh()))
        self.fit_button.clicked.connect(self.fit)
        self.export_svg_button.clicked.connect(lambda: self._on_export_clicked("svg"))
        self.export_png_button.clicked.connect(lambda: self._on_export_clicked("png"))
        self.tree_view.clicked.connect(self._on_tree_clicked)
        self.tree_view.expanded.connect(lambda _index: self.tree_view.resizeColumnToContents(0))

    def _arch_menu(self) -> QMenu:
        menu = QMenu(self)
        zoo = menu.addMenu("Built-in zoo")
        for name, entry in ZOO.items():
            action = zoo.addAction(name)
            action.setToolTip(entry.description)
            action.triggered.connect(lambda _=False, n=name: self.choose_arch(f"zoo:{n}"))
        menu.addAction("Factory file (.py)…").triggered.connect(self._on_pick_factory)
        menu.addAction("Exported program (.pt2)…").triggered.connect(self._on_pick_pt2)
        menu.addAction("Hugging Face config (config.json)…").triggered.connect(self._on_pick_hf_config)
        menu.addAction("Module tree (no architecture)").triggered.connect(lambda: self.choose_arch(""))
        return menu

    # --- what to show ---------------------------------------------------------------------
    def clear(self) -> None:
        """Back to the empty state with its explanatory sentence."""
        self._cancel_running()
        self._source, self._picture, self._checkpoint = None, None, None
        self._clear_scene()
        self.tree_model.clear()
        self.properties.clear()
        self.banner.hide()
        self.status_label.clear()
        self.stack.setCurrentWidget(self.empty_label)

    def show_arch(self, arch: str, title: str = "") -> None:
        """Trace and draw an architecture spec (``zoo:resnet20``, ``net.py:build``, ``m.pt2``)."""
        self._checkpoint = None
        self._expanded.clear()
        self._source = lambda depth, nested, overlay: lambda cancel, expand=frozenset(self._expanded): iter_arch_picture(
            arch, depth=depth, expand_nested=nested, overlay=overlay, title=title or arch, expand=expand, cancel=cancel
        )
        self._rebuild()

    def show_checkpoint(self, checkpoint: Any, arch: str | None = None) -> None:
        """Draw a checkpoint: its (given, remembered or detected) architecture, else its module tree."""
        if checkpoint is not self._checkpoint:
            self._expanded.clear()
        self._checkpoint = checkpoint
        key = str(getattr(checkpoint, "path", ""))
        arch = arch if arch is not None else self._arch_by_path.get(key)
        self._source = lambda depth, nested, overlay: lambda cancel, expand=frozenset(self._expanded): (
            iter_checkpoint_picture(checkpoint, arch=arch, depth=depth, expand_nested=nested, overlay=overlay,
                                    expand=expand, cancel=cancel))
        from merge_studio.core.stacking import layer_origins  # needs the recipe model: not at start-up

        origins = layer_origins(checkpoint) if hasattr(checkpoint, "metadata") else {}
        if origins:  # a stacked merge: its blocks coloured by the model each came from
            self._offer_origins(origins)
        self._rebuild()

    def _offer_origins(self, origins: Mapping[str, str]) -> None:
        self._expanded.update({path.rsplit(".", 1)[0] for path in origins})  # each layer drawn in its colour
        models = list(dict.fromkeys(origins.values()))
        colours = {name: SOURCE_COLOURS[i % len(SOURCE_COLOURS)] for i, name in enumerate(models)}
        marks = Marks({path: colours[name] for path, name in origins.items()}, {c: n for n, c in colours.items()})
        values = {path: float(models.index(name)) for path, name in origins.items()}
        self.set_overlay(SOURCE_OVERLAY, values, marks=marks, show=False,
                         scale=OverlayScale("fixed", 0.0, float(max(1, len(models) - 1))))
        self.overlay_combo.blockSignals(True)
        self.overlay_combo.setCurrentText(SOURCE_OVERLAY)  # drawn by the rebuild that follows
        self.overlay_combo.blockSignals(False)

    def set_block_expanded(self, path: str, expanded: bool) -> None:
        """Draw a block of repeated layers (``model.layers``) layer by layer, or once with ``×N``."""
        (self._expanded.add if expanded else self._expanded.discard)(path)
        self._rebuild()

    def _fill_repeats_menu(self, graph: ModuleGraph) -> None:
        menu = self.repeats_button.menu()
        menu.clear()
        for block in graph.repeats:
            action = menu.addAction(f"Show each of the {block.count} {block.module_type} in {block.path}")
            action.triggered.connect(lambda _=False, p=block.path: self.set_block_expanded(p, True))
        for block in graph.expanded:
            action = menu.addAction(f"Draw the {block.count} {block.module_type} in {block.path} once (×{block.count})")
            action.triggered.connect(lambda _=False, p=block.path: self.set_block_expanded(p, False))
        self.repeats_button.setVisible(bool(graph.repeats or graph.expanded))

    def choose_arch(self, spec: str) -> None:
        """Use ``spec`` for the shown checkpoint (remembered per file) or show it alone."""
        self.sig_arch_chosen.emit(spec)
        if self._checkpoint is not None:
            self._arch_by_path[str(getattr(self._checkpoint, "path", ""))] = spec
            self.show_checkpoint(self._checkpoint, spec)
        elif spec:
            self.show_arch(spec)

    def request_graph(self, job_factory: PictureJob) -> JobWorker:
        """Run any job that returns a :class:`GraphPicture` off the GUI thread and show its result."""
        self._cancel_running()
        self.status_label.setText("Laying out the graph…")
        worker = self._runner.start(with_scene(job_factory), name="graph")
        worker.sig_result.connect(self._on_worker_result)
        worker.sig_failed.connect(self._on_worker_failed)
        self._worker = worker
        return worker

    def set_graph(self, graph: ModuleGraph, svg: bytes) -> None:
        """Show an already laid-out graph (no job)."""
        self._show_picture(GraphPicture(graph, graph, svg))

    def set_key_tree(self, source: Any, *, dot_missing: bool = False) -> None:
        """Show the module tree of tensor names (the fallback view).

        ``source``: a :class:`KeyTreeNode`, the inspector's ``KeyNode``, a checkpoint or its infos.
        """
        self._picture = None
        self._fill_tree(key_tree(source))
        self._set_banner(dot_missing)
        self.stack.setCurrentWidget(self.tree_view)

    def set_overlay(
        self,
        name: str,
        values: Mapping[str, float],
        *,
        cmap: str = "viridis",
        marks: Mapping[str, str] | None = None,
        show: bool = True,
        vmin: float | None = None,
        vmax: float | None = None,
        scale: OverlayScale | None = None,
    ) -> None:
        """Offer ``values`` (module path → number) as an overlay and show it now (unless ``show=False``).

        ``marks`` (module path → colour) paints layers apart from the scale, e.g. the
        layers re-basin could not permute; the legend gains a line for them. ``scale``
        says what the colours mean (``vmin``/``vmax`` given together: a fixed scale);
        without one, values ≥ 0 are coloured from 0 and signed values diverge around 0.
        """
        if scale is None:
            scale = OverlayScale("fixed", vmin, vmax) if vmin is not None and vmax is not None else OverlayScale.for_values(values)
        self._meanings[name] = (dict(values), cmap, scale)
        self._realise_overlay(name)
        self._marks[name] = Marks(marks)
        if self.overlay_combo.findText(name) < 0:
            self.overlay_combo.addItem(name)
        if not show:
            return
        if self.overlay_combo.currentText() == name:
            self._apply_overlay()
        else:
            self.overlay_combo.setCurrentText(name)  # applies through the signal

    def _realise_overlay(self, name: str) -> None:
        """The overlay as drawn: its scale (or the values' own range, when stretched) and a legend saying which."""
        values, cmap, scale = self._meanings[name]
        shown = OverlayScale("stretch") if self.stretch_check.isChecked() else scale
        vmin, vmax, colours, words = shown.resolve(values, cmap)
        self._overlays[name] = Overlay(f"{name}: {words}", values, colours)
        self._scales[name] = (vmin, vmax)

    def overlay_scale(self, name: str | None = None) -> OverlayScale | None:
        """The scale an overlay was offered with (not the stretched one)."""
        meaning = self._meanings.get(name or self.overlay_combo.currentText())
        return meaning[2] if meaning is not None else None

    def overlay_names(self) -> list[str]:
        """The overlays the combo offers (without "No overlay")."""
        return [self.overlay_combo.itemText(i) for i in range(1, self.overlay_combo.count())]

    def _current_scale(self) -> tuple[float | None, float | None] | None:
        scale = self._scales.get(self.overlay_combo.currentText())
        return scale if scale is not None and scale != (None, None) else None

    def current_marks(self) -> dict[str, str]:
        """Marked layers (module path → colour) of the overlay on screen."""
        return Marks(self._marks.get(self.overlay_combo.currentText()))

    def request_overlay(
        self,
        name: str,
        job_factory: Callable[[CancelToken], Generator[Any, None, Mapping[str, float]]],
        *,
        cmap: str = "viridis",
    ) -> JobWorker:
        """Compute per-layer values off the GUI thread, then offer and show them as an overlay.

        For example ``view.request_overlay("relative change", lambda cancel:
        iter_layer_relative_change(a, merged, cancel))`` (see :mod:`merge_studio.core.analysis`).
        """
        worker = self._runner.start(job_factory, name="graph-overlay")
        self._overlay_jobs[worker] = (name, cmap)
        worker.sig_result.connect(self._on_overlay_values)
        worker.sig_failed.connect(self._on_worker_failed)
        return worker

    @Slot(object)
    def _on_overlay_values(self, values: Mapping[str, float]) -> None:
        name, cmap = self._overlay_jobs.pop(self.sender(), ("overlay", "viridis"))
        self.set_overlay(name, values, cmap=cmap)

    def current_overlay(self) -> Overlay | None:
        return self._overlays.get(self.overlay_combo.currentText())

    @property
    def picture(self) -> GraphPicture | None:
        return self._picture

    def node_item(self, module_path: str) -> NodeItem | None:
        """The clickable item drawing ``module_path`` (or its nearest drawn ancestor)."""
        if self._picture is None:
            return None
        nodes = self._picture.graph.nodes_for(module_path)
        return self._items.get(nodes[0].node_id) if nodes else None

    def select_layer(self, module_path: str) -> None:
        """Highlight and centre the node (or tree row) of a layer, e.g. chosen in the inspector."""
        item = self.node_item(module_path)
        for other in self._items.values():
            other.setPen(QPen(Qt.PenStyle.NoPen))
        if item is not None:
            item.setPen(SELECT_PEN)
            self.graphics.centerOn(item)
        if self.stack.currentWidget() is self.tree_view:
            index = self._tree_index(module_path)
            if index is not None:
                self.tree_view.setCurrentIndex(index)
                self.tree_view.scrollTo(index)

    def fit(self) -> None:
        self.graphics.fitInView(self.scene.itemsBoundingRect(), Qt.AspectRatioMode.KeepAspectRatio)
        self.minimap.refresh()

    def export(self, path: str | Path) -> None:
        """Write the current picture as SVG or PNG (PNG is laid out off the GUI thread)."""
        target = Path(path)
        graph = self._current_graph()
        if graph is None:
            self.sig_failed.emit("nothing to export yet")
            return
        if target.suffix.lower() == ".svg" and self._picture is not None and self._picture.svg:
            target.write_bytes(self._picture.svg)
            self.sig_exported.emit(str(target))
            return
        dot, fmt = graph.dot, target.suffix.lower().lstrip(".")

        def job(cancel: CancelToken) -> Generator[Any, None, Path]:
            from merge_studio.graph.render import render

            yield from ()
            target.write_bytes(render(dot, fmt) if fmt != "png" else render_png(dot, dpi=110))
            return target

        worker = self._runner.start(job, name="graph-export")
        worker.sig_result.connect(self._on_export_done)
        worker.sig_failed.connect(self._on_worker_failed)

    def shutdown(self) -> None:
        """Stop layout jobs and wait for their threads (call before the widget goes away)."""
        self.properties.shutdown()
        self._runner.shutdown()

    def closeEvent(self, event) -> None:  # noqa: ANN001, N802
        self.shutdown()
        super().closeEvent(event)

    # --- jobs -----------------------------------------------------------------------------
    def _rebuild(self) -> None:
        if self._source is not None:
            job = self._source(self.depth_spin.value(), self.nested_check.isChecked(), self.current_overlay())
            self.request_graph(with_style(job, self.current_overlay(), self.current_marks(), self._current_scale()))

    def _cancel_running(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None

    @Slot(object)
    def _on_worker_result(self, result: PreparedPicture) -> None:
        if self.sender() is not self._worker:
            return  # a stale job: the user asked for something else since
        self._worker = None
        self._show_picture(result.picture, result.parts)

    @Slot(object)
    def _on_worker_failed(self, error: Any) -> None:
        if self.sender() is self._worker:
            self._worker = None
        message = error.message + (f" ({error.hint})" if getattr(error, "hint", None) else "")
        self.status_label.clear()
        self.banner.setText(message)
        self.banner.show()
        self.sig_failed.emit(message)

    @Slot(object)
    def _on_export_done(self, path: Path) -> None:
        self.status_label.setText(f"Exported {path}")
        self.sig_exported.emit(str(path))

    # --- showing ----------------------------------------------------------------------------
    def _show_picture(self, picture: GraphPicture, parts: SceneParts | None = None) -> None:
        previous = self._picture
        same_layout = previous is not None and previous.base is picture.base and bool(self._items)
        transform, center = self.graphics.transform(), self.graphics.mapToScene(self.graphics.viewport().rect().center())
        self._picture = picture
        self._clear_scene()
        if picture.tree is not None:
            self._fill_tree(picture.tree)
        self._set_banner(picture.dot_missing, picture.notes)
        self.properties.set_overlay(self.current_overlay(), picture.graph.legend)
        if picture.graph.kind == "module" and picture.svg:
            self._fill_scene(picture, parts)
            if same_layout:  # only the colours changed: keep the user's zoom and position
                self.graphics.setTransform(transform)
                self.graphics.centerOn(center)
            self.stack.setCurrentWidget(self.graphics)
        elif picture.tree is not None:
            self.stack.setCurrentWidget(self.tree_view)
        elif picture.svg:
            self._fill_scene(picture, parts)
            self.stack.setCurrentWidget(self.graphics)
        self._fill_repeats_menu(picture.graph)
        what = f"{len(picture.graph.nodes)} nodes" if picture.graph.kind == "module" else "module tree"
        for block in picture.graph.repeats:
            what += f" · {block.span} drawn once (×{block.count})"
        self.status_label.setText(f"{picture.arch or 'no architecture'} · {what}")
        if self.search_edit.text():
            self._on_search_changed(self.search_edit.text())
        self.sig_graph_ready.emit()

    def _set_banner(self, dot_missing: bool, notes: tuple[str, ...] = ()) -> None:
        lines = list(notes)
        if dot_missing:
            lines.insert(0, f"The layer graph needs Graphviz, which is not installed; showing the module tree. To {INSTALL_HINT}.")
        self.banner.setText("\n".join(lines))
        self.banner.setVisible(bool(lines))

    def _clear_scene(self) -> None:
        self.scene.clear()
        self._items = {}
        self._renderer = None

    def _fill_scene(self, picture: GraphPicture, parts: SceneParts | None = None) -> None:
        parts = parts or prepare_scene(picture)
        if parts is None:
            return
        self._renderer = parts.renderer  # the item does not own it
        svg_item = QGraphicsSvgItem()
        svg_item.setSharedRenderer(parts.renderer)
        self.scene.addItem(svg_item)
        size = item_rect(parts)
        for node in picture.graph.nodes:
            if node.node_id not in parts.nodes:
                continue
            scene_rect, tooltip = parts.nodes[node.node_id]
            item = NodeItem(node, scene_rect, self._on_node_clicked, tooltip)
            self.scene.addItem(item)
            self._items[node.node_id] = item
        self.scene.setSceneRect(self.scene.itemsBoundingRect())
        self.graphics.resetTransform()
        # Graphviz sizes are in points: 4/3 shows them at their printed size on a 96-dpi screen,
        # unless the graph is wider than the window.
        self.graphics.zoom(max(0.3, min(4 / 3, self.graphics.viewport().width() / max(size.width(), 1.0))))
        self.graphics.centerOn(size.center().x(), 0)
        self.minimap.refresh()

    def _fill_tree(self, tree: KeyTreeNode) -> None:
        self._tree = tree
        vmin, vmax = self._current_scale() or (None, None)
        fill_tree_model(self.tree_model, tree, self.current_overlay(), self.current_marks(), vmin=vmin, vmax=vmax)
        self.tree_view.expandToDepth(0)
        self.tree_view.resizeColumnToContents(0)
        self.tree_view.setColumnWidth(0, max(220, self.tree_view.columnWidth(0)))

    def _tree_index(self, module_path: str):  # noqa: ANN202 - a QModelIndex or None
        matches = self.tree_model.match(
            self.tree_model.index(0, 0), PATH_ROLE, module_path, 1,
            Qt.MatchFlag.MatchExactly | Qt.MatchFlag.MatchRecursive,
        )
        return matches[0] if matches else None

    def _current_graph(self) -> ModuleGraph | None:
        return self._picture.graph if self._picture is not None else None

    # --- user actions -------------------------------------------------------------------------
    def _on_node_clicked(self, node: GraphNode) -> None:
        self._describe(node)
        if node.module_path:
            self.select_layer(node.module_path)
            self.sig_layer_selected.emit(node.module_path)

    def _describe(self, node: GraphNode) -> None:
        legend = self._picture.graph.legend if self._picture is not None else None
        self.properties.show_node(node, self._checkpoint, self.current_overlay(), legend)

    @Slot()
    def _on_tree_clicked(self, index) -> None:  # noqa: ANN001
        path = index.data(PATH_ROLE)
        if path:
            nodes = self._picture.graph.nodes_for(path) if self._picture is not None else []
            self._describe(nodes[0] if nodes and nodes[0].module_path == path else GraphNode(path, path, path, ""))
            self.sig_layer_selected.emit(path)

    @Slot(bool)
    def _on_stretch_toggled(self, _stretch: bool) -> None:
        for name in self._meanings:
            self._realise_overlay(name)
        self._apply_overlay()

    def resizeEvent(self, event) -> None:  # noqa: ANN001, N802 - Qt override
        """Narrow: the properties under the graph, so the graph keeps the width."""
        super().resizeEvent(event)
        wanted = Qt.Orientation.Vertical if self.width() < NARROW_WIDTH else Qt.Orientation.Horizontal
        if self.splitter.orientation() != wanted:
            self.splitter.setOrientation(wanted)
            total = self.splitter.height() if wanted == Qt.Orientation.Vertical else self.splitter.width()
            self.splitter.setSizes([int(total * 0.75), int(total * 0.25)] if wanted == Qt.Orientation.Vertical
                                   else [int(total * 0.68), int(total * 0.32)])

    @Slot()
    def _on_options_changed(self) -> None:
        self._rebuild()

    @Slot(str)
    def _on_overlay_combo_changed(self, _name: str) -> None:
        self._apply_overlay()

    def _apply_overlay(self) -> None:
        overlay = self.current_overlay()
        picture = self._picture
        if picture is not None and picture.tree is not None:
            self._fill_tree(picture.tree)
        elif picture is None and self._tree is not None and self.stack.currentWidget() is self.tree_view:
            self._fill_tree(self._tree)  # a tree given by set_key_tree: recolour it in place
        if picture is None:
            if self._source is not None and self._worker is not None:
                self._rebuild()  # a build is under way: rebuild with the overlay
            return
        marks, scale = self.current_marks(), self._current_scale()
        self.request_graph(lambda cancel: iter_restyle(picture, overlay, marks, scale, cancel))

    @Slot(str)
    def _on_search_changed(self, text: str) -> None:
        graph = self._current_graph()
        if self.stack.currentWidget() is self.tree_view:
            hits = self.tree_model.match(self.tree_model.index(0, 0), PATH_ROLE, text, 1,
                                         Qt.MatchFlag.MatchContains | Qt.MatchFlag.MatchRecursive) if text else []
            if hits:
                self.tree_view.setCurrentIndex(hits[0])
                self.tree_view.scrollTo(hits[0])
            return
        self._matches = [n.module_path for n in graph.search(text) if n.module_path] if graph else []
        if self._matches:
            self.select_layer(self._matches[0])

    @Slot()
    def _on_search_next(self) -> None:
        if len(self._matches) > 1:
            self._matches.append(self._matches.pop(0))
            self.select_layer(self._matches[0])

    def _on_export_clicked(self, fmt: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self, f"Export graph as {fmt.upper()}", f"graph.{fmt}", f"{fmt.upper()} (*.{fmt})")
        if path:
            self.export(path if path.lower().endswith(f".{fmt}") else f"{path}.{fmt}")

    def _on_pick_factory(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Python file that builds the model", "", "Python (*.py)")
        if not path:
            return
        function, ok = QInputDialog.getText(self, "Factory function", "Function that returns the nn.Module:", text="build")
        if ok and function.strip():
            self.choose_arch(f"{path}:{function.strip()}")

    def _on_pick_hf_config(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Hugging Face model config", "", "Model config (config.json *.json)")
        if path:
            self.choose_arch(f"hf:{path}")

    def _on_pick_pt2(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Exported program", "", "Exported programs (*.pt2)")
        if path:
            self.choose_arch(path)
