"""How the window shares its space: side panels and the log give way to the tabs.

Rules that hold for every tab, present or future (issue 19):

* the model list, the method panel and the log can be hidden (View menu,
  Ctrl+Alt+1/2/3, or dragging a splitter to the edge); the log can also fold
  down to one line that shows its latest entry;
* default sizes follow the window: at laptop sizes (below 1400 × 900) the side
  panels are narrower and the log is short, so the plots get the room;
* the splitters' positions and which panels are hidden are remembered;
* the window can shrink to :data:`MIN_WINDOW` (a tab whose content needs more
  room scrolls, see :class:`~merge_studio.gui.views.scrolling_tabs.ScrollingTabs`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QLabel, QMenu, QPushButton

if TYPE_CHECKING:
    from merge_studio.gui.main_window import MainWindow

MIN_WINDOW = (800, 560)
MODELS_MIN_WIDTH = 180
TABS_MIN_WIDTH = 300
LOG_FOLDED_HEIGHT = 30  # the log's header line alone
LAPTOP_WIDTH = 1400
LAPTOP_HEIGHT = 900
PANELS = ("models", "method", "log")


class PanelLayout(QObject):
    """Owns the window's splitter rules, the View ▸ panel toggles and the foldable log."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.models_panel = window.h_split.widget(0)
        self.actions: dict[str, QAction] = {}
        self._sizes: dict[str, int] = {}  # a hidden panel's last size, to come back to
        self._setup_splitters()
        self._setup_log()
        self._add_view_actions()

    # --- construction ---------------------------------------------------------------------
    def _setup_splitters(self) -> None:
        window = self.window
        self.models_panel.setMinimumWidth(MODELS_MIN_WIDTH)
        window.tabs.setMinimumWidth(TABS_MIN_WIDTH)
        window.h_split.setChildrenCollapsible(True)
        window.h_split.setCollapsible(1, False)  # the tabs never vanish
        window.v_split.setChildrenCollapsible(True)
        window.v_split.setCollapsible(0, False)
        window.log_panel.setMinimumHeight(LOG_FOLDED_HEIGHT)
        window.setMinimumSize(*MIN_WINDOW)
        bar = window.tabs.tabBar()
        bar.setElideMode(Qt.TextElideMode.ElideNone)  # titles whole; arrows scroll when they do not fit
        bar.setUsesScrollButtons(True)
        window.h_split.splitterMoved.connect(self._on_splitter_moved)
        window.v_split.splitterMoved.connect(self._on_splitter_moved)

    def _setup_log(self) -> None:
        log = self.window.log_panel
        self.log_preview = QLabel(log)
        self.log_preview.setObjectName("log_preview")
        self.log_preview.setTextFormat(Qt.TextFormat.PlainText)
        self.log_preview.setStyleSheet("color:#5a6470;")
        self.fold_button = QPushButton("Fold", log)
        self.fold_button.setObjectName("flat_button")
        self.fold_button.setToolTip("Fold the log to one line (View ▸ Log panel hides it)")
        self.fold_button.clicked.connect(lambda: self.set_log_folded(not self.log_folded))
        log.add_header_widget(self.log_preview, stretch=4)
        log.add_header_widget(self.fold_button)
        self.log_preview.hide()
        log.sig_logged.connect(self._on_log_logged)

    def _add_view_actions(self) -> None:
        menu = self._view_menu()
        if menu is None:
            return
        menu.addSeparator()
        for key, text, shortcut in (("models", "&Models panel", "Ctrl+Alt+1"), ("method", "M&ethod panel", "Ctrl+Alt+2"),
                                    ("log", "&Log panel", "Ctrl+Alt+3")):
            action = QAction(text, self.window)
            action.setCheckable(True)
            action.setChecked(True)
            action.setShortcut(QKeySequence(shortcut))
            action.setStatusTip(f"Show or hide the {text.replace('&', '').lower()}")
            action.toggled.connect(lambda shown, key=key: self.set_panel_shown(key, shown))
            menu.addAction(action)
            self.actions[key] = action
        fold = QAction("&Fold log to one line", self.window)
        fold.setShortcut(QKeySequence("Ctrl+Alt+L"))
        fold.triggered.connect(lambda: self.set_log_folded(not self.log_folded))
        menu.addAction(fold)
        self.actions["fold_log"] = fold
        reset = QAction("&Reset layout", self.window)
        reset.setStatusTip("Show every panel again at the default sizes for this window size")
        reset.triggered.connect(self.reset)
        menu.addAction(reset)
        self.actions["reset_layout"] = reset

    def _view_menu(self) -> QMenu | None:
        for action in self.window.menuBar().actions():
            if action.menu() is not None and action.text().replace("&", "") == "View":
                return action.menu()
        return None

    # --- panels -----------------------------------------------------------------------------
    def _splitter_slot(self, key: str):  # noqa: ANN202 - (splitter, index)
        window = self.window
        return {"models": (window.h_split, 0), "method": (window.h_split, 2), "log": (window.v_split, 1)}[key]

    def panel_shown(self, key: str) -> bool:
        split, index = self._splitter_slot(key)
        return split.sizes()[index] > 0

    def set_panel_shown(self, key: str, shown: bool) -> None:
        """Hide a side panel or the log (its size is kept for when it comes back)."""
        split, index = self._splitter_slot(key)
        sizes = split.sizes()
        if shown == (sizes[index] > 0):
            self._sync_actions()
            return
        other = 1 if split is self.window.h_split else 0  # the tabs take or give the room
        if shown:
            default = self._default_size(key)
            want = self._sizes.get(key) or default
            sizes[index] = want
            sizes[other] = max(sizes[other] - want, 1)
        else:
            self._sizes[key] = sizes[index]
            sizes[other] += sizes[index]
            sizes[index] = 0
        split.setSizes(sizes)
        self.window.settings.set_panel_hidden(key, not shown)
        self._sync_actions()

    def _default_size(self, key: str) -> int:
        width = self.window.h_split.width() or self.window.width()
        height = self.window.v_split.height() or self.window.height()
        return {"models": self.models_width(width), "method": self.method_width(width),
                "log": self.log_height(height)}[key]

    def _sync_actions(self) -> None:
        for key in PANELS:
            action = self.actions.get(key)
            if action is not None:
                action.blockSignals(True)
                action.setChecked(self.panel_shown(key))
                action.blockSignals(False)

    def _on_splitter_moved(self, *_args: object) -> None:
        self._sync_actions()
        for key in PANELS:
            self.window.settings.set_panel_hidden(key, not self.panel_shown(key))

    # --- the log ------------------------------------------------------------------------------
    @property
    def log_folded(self) -> bool:
        return not self.window.log_panel.view.isVisible() and self.window.log_panel.isVisible()

    def set_log_folded(self, folded: bool) -> None:
        """Fold the log to its header line, which then shows the latest entry; unfold to the full log."""
        log = self.window.log_panel
        split = self.window.v_split
        sizes = split.sizes()
        log.view.setVisible(not folded)
        self.log_preview.setVisible(folded)
        self.fold_button.setText("Unfold" if folded else "Fold")
        total = sum(sizes)
        if folded:
            if sizes[1] > LOG_FOLDED_HEIGHT:
                self._sizes["log"] = sizes[1]
            split.setSizes([total - LOG_FOLDED_HEIGHT, LOG_FOLDED_HEIGHT])
        else:
            want = max(self._sizes.get("log") or 0, self._default_size("log"))
            split.setSizes([total - want, want])
        self.window.settings.set_log_folded(folded)
        self._sync_actions()

    def _on_log_logged(self, level: str, text: str) -> None:
        self.log_preview.setText(text)
        self.log_preview.setToolTip(text)
        if level == "error" and self.log_folded:
            self.log_preview.setStyleSheet("color:#c0392b;")
        else:
            self.log_preview.setStyleSheet("color:#5a6470;")

    # --- default sizes --------------------------------------------------------------------------
    @staticmethod
    def models_width(width: int) -> int:
        return 230 if width < LAPTOP_WIDTH else (300 if width < 1700 else 380)

    def method_width(self, width: int) -> int:
        panel = self.window.method_panel
        smallest = max(panel.minimumWidth(), panel.minimumSizeHint().width())
        return max(smallest, 300 if width < LAPTOP_WIDTH else (340 if width < 1700 else 400))

    @staticmethod
    def log_height(height: int) -> int:
        return 96 if height < LAPTOP_HEIGHT else 150

    def fit(self, *, wide_list: bool) -> None:
        """Default sizes for the window's size; ``wide_list``: the Inspector is showing, the list gets half."""
        window = self.window
        width = window.h_split.width() or window.width()
        right = self.method_width(width) if self.panel_shown("method") else 0
        left = self.models_width(width) if self.panel_shown("models") else 0
        if wide_list and left:
            left = max(left, int((width - right) * (0.45 if width >= 1600 else 0.42)))
        elif left:  # every tab title whole if the list can give the room
            needed = window.tabs.tabBar().sizeHint().width() + 8
            left = max(MODELS_MIN_WIDTH, min(left, width - right - needed))
        window.h_split.setSizes([left, max(width - left - right, TABS_MIN_WIDTH), right])
        height = window.v_split.height() or window.height()
        if self.log_folded:
            log = LOG_FOLDED_HEIGHT
        else:
            log = self.log_height(height) if self.panel_shown("log") else 0
        window.v_split.setSizes([height - log, log])

    def restore(self) -> None:
        """Hidden panels and the folded log as the user left them."""
        settings = self.window.settings
        if settings.log_folded:
            self.set_log_folded(True)
        for key in PANELS:
            if settings.panel_hidden(key):
                self.set_panel_shown(key, False)
        self._sync_actions()

    def reset(self) -> None:
        for key in PANELS:
            self.set_panel_shown(key, True)
        if self.log_folded:
            self.set_log_folded(False)
        self.window.fit_panels()


__all__ = ["MIN_WINDOW", "PanelLayout"]
