"""A tab widget whose pages scroll when the window is smaller than they need.

Plots have a smallest readable size (their axes collapse below it and matplotlib
warns "constrained_layout not applied"); squeezed further, Qt would clip them or
push the window's minimum size up. Every page, whoever adds it, is put in a
frameless :class:`QScrollArea` that fits the page to the tab while there is room
and scrolls when there is not. The wrapper is invisible to callers: ``widget``,
``indexOf``, ``currentWidget`` and ``setCurrentWidget`` speak of the pages.

Combo boxes on a page size to a few characters rather than to their longest
item (a long file name would otherwise set the page's minimum width and make
it scroll sideways); their popups still show whole names.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QSize, Qt, QTimer
from PySide6.QtWidgets import QComboBox, QFrame, QScrollArea, QStackedWidget, QTabWidget, QWidget

COMBO_MIN_CHARACTERS = 10


class _PageScroller(QScrollArea):
    """Fits its page to the visible area, never below the page's minimum size (then it scrolls).

    Sized here rather than by ``widgetResizable``: with that, any word-wrapped label on
    the page (height-for-width) makes Qt size the page to its *preferred* height, and
    the page scrolls although everything would fit.
    """

    def __init__(self, page: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("tab_page_scroller")
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setWidgetResizable(False)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.page = page
        self._fitting = False
        self.setWidget(page)  # the scroll area filters the page's events (see eventFilter)

    def fit_page(self) -> None:
        if self._fitting or self.widget() is None:
            return
        self._fitting = True
        try:
            wanted = self.page.minimumSizeHint().expandedTo(self.page.minimumSize())
            area = self.maximumViewportSize()  # the room without scroll bars
            width = max(area.width(), wanted.width())
            height = max(area.height(), wanted.height())
            if height > area.height():  # a vertical scroll bar will take some width
                width = max(wanted.width(), area.width() - self.verticalScrollBar().sizeHint().width())
            if width > area.width():
                height = max(wanted.height(), area.height() - self.horizontalScrollBar().sizeHint().height())
            if self.page.size() != QSize(width, height):
                self.page.resize(width, height)
        finally:
            self._fitting = False

    def resizeEvent(self, event) -> None:  # noqa: ANN001, N802 - Qt override
        super().resizeEvent(event)
        self.fit_page()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if watched is self.page and event.type() == QEvent.Type.LayoutRequest:
            QTimer.singleShot(0, self.fit_page)  # after the page's layout settled
        return super().eventFilter(watched, event)


class ScrollingTabs(QTabWidget):
    """``QTabWidget`` that wraps each page in a scroll area (see the module's docstring)."""

    def addTab(self, page: QWidget, *args) -> int:  # noqa: ANN002, N802 - Qt override (icon?, title)
        return super().addTab(self._wrap(page), *args)

    def insertTab(self, index: int, page: QWidget, *args) -> int:  # noqa: ANN002, N802 - Qt override
        return super().insertTab(index, self._wrap(page), *args)

    def removeTab(self, index: int) -> None:  # noqa: N802 - Qt override: the page survives, its wrapper goes
        wrapper = super().widget(index)
        super().removeTab(index)
        if isinstance(wrapper, _PageScroller):
            page = wrapper.takeWidget()
            if page is not None:
                page.setParent(self)
                page.hide()
            wrapper.deleteLater()

    def widget(self, index: int) -> QWidget | None:
        return self._unwrap(super().widget(index))

    def currentWidget(self) -> QWidget | None:  # noqa: N802 - Qt override
        return self._unwrap(super().currentWidget())

    def indexOf(self, page: QWidget) -> int:  # noqa: N802 - Qt override
        for i in range(self.count()):
            if self.widget(i) is page or super().widget(i) is page:
                return i
        return -1

    def setCurrentWidget(self, page: QWidget) -> None:  # noqa: N802 - Qt override
        index = self.indexOf(page)
        if index >= 0:
            self.setCurrentIndex(index)

    def scroller(self, index: int) -> QScrollArea | None:
        """The scroll area around a page (tests check that nothing needs to scroll)."""
        wrapper = super().widget(index)
        return wrapper if isinstance(wrapper, QScrollArea) else None

    @staticmethod
    def _wrap(page: QWidget) -> QWidget:
        for combo in page.findChildren(QComboBox):
            if combo.sizeAdjustPolicy() != QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon:
                combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
                combo.setMinimumContentsLength(COMBO_MIN_CHARACTERS)
        return page if isinstance(page, QScrollArea) else _PageScroller(page)

    @staticmethod
    def _unwrap(wrapper: QWidget | None) -> QWidget | None:
        return wrapper.page if isinstance(wrapper, _PageScroller) else wrapper


__all__ = ["ScrollingTabs"]


class CurrentPageStack(QStackedWidget):
    """``QStackedWidget`` as small as the page it shows.

    Qt sizes a stack to the largest of all its pages, hidden ones too: the welcome
    page kept the Inspector 505 px wide at 1024×768, so the tensor table's Dtype and
    Parameters columns sat off screen behind a scroll bar.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.currentChanged.connect(lambda _index: self.updateGeometry())

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt override
        page = self.currentWidget()
        return page.minimumSizeHint().expandedTo(page.minimumSize()) if page is not None else super().minimumSizeHint()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        page = self.currentWidget()
        return page.sizeHint() if page is not None else super().sizeHint()
