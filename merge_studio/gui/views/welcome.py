"""The first thing a new user sees: what the program is for and three ways to begin.

It only emits signals; the window decides what "open" and "demo" mean, so the
view stays the same whether the demo models are trained or generated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QGuiApplication, QPalette, QResizeEvent
from PySide6.QtWidgets import (
    QBoxLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from merge_studio.gui.resources import app_icon, icon

RECIPE_SUFFIXES = (".yaml", ".yml")
PATH_ROLE = Qt.ItemDataRole.UserRole
STACK_BELOW_WIDTH = 820
STACKED_RECENT_HEIGHT = 150
QWIDGETSIZE_MAX = (1 << 24) - 1
TAGLINE = "Merge neural-network checkpoints, and see whether the merge worked."


def _display_name(path: Path) -> str:
    """``name — folder``, so two ``model.safetensors`` from different runs can be told apart."""
    if not path.name:
        return str(path)
    folder = str(path.parent).replace(str(Path.home()), "~", 1)
    return f"{path.name}  —  {folder}"


DEMO_HINT = "Small models, ready to merge, graph, align and compare."


class ActionCard(QPushButton):
    """A large button with an icon, a title and one line saying what it does."""

    def __init__(self, icon_name: str, title: str, text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("welcome_action")
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setAccessibleName(title)
        self.setToolTip(text)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        picture = QLabel(self)
        picture.setPixmap(icon(icon_name).pixmap(QSize(28, 28)))
        self.title = QLabel(title, self)
        self.title.setObjectName("welcome_card_title")
        self.title.setStyleSheet("font-weight: 600; font-size: 14px; background: transparent;")
        self.text = QLabel(text, self)
        self.text.setObjectName("welcome_hint")
        self.text.setWordWrap(True)
        self.text.setStyleSheet("background: transparent;")
        words = QVBoxLayout()
        words.setSpacing(2)
        words.addWidget(self.title)
        words.addWidget(self.text)
        row = QHBoxLayout(self)
        row.setContentsMargins(16, 12, 16, 12)
        row.setSpacing(14)
        row.addWidget(picture, 0, Qt.AlignmentFlag.AlignTop)
        row.addLayout(words, 1)
        for child in (picture, self.title, self.text):
            child.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setMinimumHeight(72)

    def sizeHint(self) -> QSize:  # the layout inside, not the (empty) button text, sets the size
        return self.layout().sizeHint().expandedTo(QSize(240, 72))


class WelcomeView(QWidget):
    """Logo, one line about the program, three big buttons and the recent files."""

    sig_open_files = Signal()
    sig_open_recipe = Signal()
    sig_try_demo = Signal()
    sig_open_recent = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("welcome_view")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)

        logo = QLabel(self)
        logo.setPixmap(app_icon().pixmap(QSize(72, 72)))
        title = QLabel("Merge Studio", self)
        title.setObjectName("welcome_title")
        tagline = QLabel(TAGLINE, self)
        tagline.setObjectName("welcome_tagline")
        tagline.setWordWrap(True)
        heading = QVBoxLayout()
        heading.setSpacing(2)
        heading.addStretch(1)
        heading.addWidget(title)
        heading.addWidget(tagline)
        heading.addStretch(1)
        header = QHBoxLayout()
        header.setSpacing(18)
        header.addWidget(logo)
        header.addLayout(heading, 1)

        self.open_files_button = ActionCard(
            "open", "Open checkpoints…", ".safetensors, .pt, .bin, .pt2 or a Hugging Face folder. (Ctrl+O)", self)
        self.open_recipe_button = ActionCard(
            "open-recipe", "Open recipe…", "A saved merge recipe or a mergekit config. (Ctrl+Shift+O)", self)
        self.demo_button = ActionCard(
            "demo", "Try the demo", DEMO_HINT, self)
        self.open_files_button.clicked.connect(self.sig_open_files)
        self.open_recipe_button.clicked.connect(self.sig_open_recipe)
        self.demo_button.clicked.connect(self.sig_try_demo)
        actions = QVBoxLayout()
        actions.setSpacing(10)
        start = QLabel("Start", self)
        start.setObjectName("welcome_section")
        actions.addWidget(start)
        for button in (self.open_files_button, self.open_recipe_button, self.demo_button):
            actions.addWidget(button)
        actions.addStretch(1)

        recent_title = QLabel("Recent", self)
        recent_title.setObjectName("welcome_section")
        self.recent_list = QListWidget(self)
        self.recent_list.setObjectName("welcome_recent")
        self.recent_list.setIconSize(QSize(18, 18))
        self.recent_list.setUniformItemSizes(True)
        self.recent_list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.recent_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.recent_list.itemClicked.connect(self._on_recent_list_clicked)
        self.recent_list.itemActivated.connect(self._on_recent_list_activated)
        self.recent_empty = QLabel("Files you open will be listed here.", self)
        self.recent_empty.setObjectName("welcome_hint")
        self.recent_empty.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        recent = QVBoxLayout()
        recent.setSpacing(10)
        recent.addWidget(recent_title)
        recent.addWidget(self.recent_list, 1)
        recent.addWidget(self.recent_empty, 1)

        self.columns = QBoxLayout(QBoxLayout.Direction.LeftToRight)
        self.columns.setSpacing(28)
        self.columns.addLayout(actions, 1)
        self.columns.addLayout(recent, 1)

        drop_hint = QLabel("You can also drop checkpoint files or folders anywhere on this window.", self)
        drop_hint.setObjectName("welcome_hint")

        body = QWidget(self)
        body.setMaximumWidth(860)
        body.setAttribute(Qt.WidgetAttribute.WA_TranslucentBackground)
        column = QVBoxLayout(body)
        column.setContentsMargins(32, 24, 32, 24)
        column.setSpacing(24)
        column.addLayout(header)
        column.addLayout(self.columns, 1)
        column.addWidget(drop_hint)

        outer = QHBoxLayout(self)
        outer.addStretch(1)
        centre = QVBoxLayout()
        centre.addStretch(1)
        centre.addWidget(body, 6)
        centre.addStretch(1)
        outer.addLayout(centre, 12)
        outer.addStretch(1)
        self.set_recent([])

    def is_stacked(self) -> bool:
        """Whether the recent files sit under the buttons (narrow) rather than beside them."""
        return self.columns.direction() == QBoxLayout.Direction.TopToBottom

    def resizeEvent(self, event: QResizeEvent) -> None:
        # Beside each other the columns need ~820 px; narrower, stack them and keep the list short.
        stacked = event.size().width() < STACK_BELOW_WIDTH
        self.columns.setDirection(QBoxLayout.Direction.TopToBottom if stacked else QBoxLayout.Direction.LeftToRight)
        self.columns.setSpacing(14 if stacked else 28)
        self.recent_list.setMaximumHeight(STACKED_RECENT_HEIGHT if stacked else QWIDGETSIZE_MAX)
        super().resizeEvent(event)

    def set_demo_progress(self, text: str | None) -> None:
        """While the demo trains (first start only): say so on its card, with the progress; ``None`` when done."""
        card = self.demo_button
        if text is None:
            card.text.setText(DEMO_HINT)
            card.setEnabled(True)
        else:
            card.text.setText(text)
            card.setEnabled(False)

    def set_recent(self, paths: Sequence[str | Path]) -> None:
        """Show these recently used files (newest first); recipes get the recipe icon."""
        self.recent_list.clear()
        for raw in paths:
            path = Path(raw)
            is_recipe = path.suffix.lower() in RECIPE_SUFFIXES
            item = QListWidgetItem(icon("open-recipe" if is_recipe else "folder" if path.is_dir() else "open"),
                                   _display_name(path))
            item.setData(PATH_ROLE, str(path))
            exists = path.exists()
            item.setToolTip(str(path) if exists else f"{path}\n(not found: moved or deleted)")
            if not exists:
                faded = self.palette().color(QPalette.ColorRole.Text)
                faded.setAlphaF(0.45)
                item.setForeground(faded)
                font = item.font()
                font.setItalic(True)
                item.setFont(font)
            self.recent_list.addItem(item)
        has_items = self.recent_list.count() > 0
        self.recent_list.setVisible(has_items)
        self.recent_empty.setVisible(not has_items)

    def recent_paths(self) -> list[str]:
        """The paths listed, in order (for tests and the window)."""
        return [self.recent_list.item(i).data(PATH_ROLE) for i in range(self.recent_list.count())]

    def _on_recent_list_clicked(self, item: QListWidgetItem) -> None:
        self.sig_open_recent.emit(item.data(PATH_ROLE))

    def _on_recent_list_activated(self, item: QListWidgetItem) -> None:
        # Enter opens the item; a double-click also activates, but its first click already opened it.
        if QGuiApplication.mouseButtons() == Qt.MouseButton.NoButton:
            self.sig_open_recent.emit(item.data(PATH_ROLE))
