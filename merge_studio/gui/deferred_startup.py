"""What the window leaves for after its first paint, so it opens fast (issue 7).

The Graph, Barrier and Permutations views import torch, matplotlib and scipy
(over a second on a small machine), and asking torch for GPUs imports it too.
With ``defer_startup=True`` the window shows placeholder tabs, paints, then
builds the views and probes the devices; anything that asks for
:attr:`extra_views` earlier gets them built on the spot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtWidgets import QWidget

from merge_studio.gui import gc_guard, kernel_warmup
from merge_studio.gui.resources import icon

if TYPE_CHECKING:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QTabWidget

    from merge_studio.gui.view_wiring import ViewWiring
    from merge_studio.gui.views.method_picker import MethodPicker


# (tab title, module, class, empty-state sentence) for views other issues provide
OPTIONAL_TABS = (
    ("Graph", "merge_studio.gui.views.graph_view", "GraphView",
     "The model's layer graph will appear here, coloured by how much each layer changed in the merge."),
    ("Barrier", "merge_studio.gui.views.barrier_plot", "BarrierPanel",
     "Loss and accuracy along the path between two models (the loss barrier) will be plotted here."),
    ("Permutations", "merge_studio.gui.views.align_panel", "PermutationsTab",
     "How re-basin aligns the neurons of one model to another will be shown here, layer by layer."),
    ("Search", "merge_studio.gui.views.search", "SearchTab",
     "A coefficient search (Optuna) over the method's parameters will plot its trials here."),
)


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken driver reads as "no GPU"
        return False


class DeferredStartup:
    """Mixin for :class:`~merge_studio.gui.main_window.MainWindow` (which sets the attributes below)."""

    tabs: QTabWidget
    wiring: ViewWiring
    method_panel: MethodPicker
    _extra_views: dict[str, QWidget]
    _view_slots: dict[str, QWidget]
    _startup_pending: bool
    _startup_timer: QTimer
    _device_timer: QTimer

    @property
    def extra_views(self) -> dict[str, QWidget]:
        """The optional views by tab title, built first if they were deferred."""
        self.build_deferred_views()
        return self._extra_views

    def build_deferred_views(self) -> None:
        """Swap the placeholder tabs for the real views (no-op once done)."""
        if not self._view_slots:
            return
        slots, self._view_slots = self._view_slots, {}
        current = self.tabs.currentIndex()
        self.tabs.blockSignals(True)  # the swap is no tab change the user made
        try:
            for title, module, cls_name, sentence in OPTIONAL_TABS:
                slot = slots[title]
                index = self.tabs.indexOf(slot)
                view = self._optional_view(title, module, cls_name, sentence)
                self.tabs.removeTab(index)
                self.tabs.insertTab(index, view, icon(title.lower()), title)
                slot.deleteLater()
            self.tabs.setCurrentIndex(current)
        finally:
            self.tabs.blockSignals(False)
        self.wiring.attach_views(self._extra_views)
        self.wiring.refresh_models()
        self._update_extra_views()
        gc_guard.settle()  # the window is built: later full collections skip all of it
        kernel_warmup.start()  # numba and LLVM before the first merge needs them

    def _finish_startup(self) -> None:
        """What the window left for after its first paint: the heavy views and the GPU probe."""
        self._startup_pending = False
        self.build_deferred_views()
        self.method_panel.add_device_choices()
        self._probe_devices()

    def _probe_devices(self) -> None:
        self._refresh_device()
        if _cuda_available():
            self._device_timer.start()

    def paintEvent(self, event) -> None:  # noqa: N802
        super().paintEvent(event)
        if self._startup_pending and not self._startup_timer.isActive():
            self._startup_timer.start(0)  # after this paint reaches the screen (a timer set on show fires before it)
