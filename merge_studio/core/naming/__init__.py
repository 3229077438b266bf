"""Layer-naming rules shared by per-layer parameters, block weights, overlays and module trees.

Import the pieces from their modules (``naming.base.naming_for``,
``naming.blocks``, ``naming.presets``); this package file imports nothing so
that :mod:`merge_studio.core.methods.layered` can use the block-weight parser
without an import cycle.
"""
