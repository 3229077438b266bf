"""Plots drawn on a matplotlib Axes (OO API only), shared by the GUI and the CLI."""
