"""Style sheet and icons shipped with the window (loaded with importlib.resources)."""
