"""The Search tab: a coefficient search's controls, live plot, best trials and importance."""

from merge_studio.gui.views.search.panel import SearchTab

__all__ = ["SearchTab"]
