"""Dialogs: errors and preferences."""
