"""GUI tests run offscreen, with settings in a temporary folder."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_settings(tmp_path, monkeypatch):
    """Point QSettings and the user data folder at tmp_path so tests never touch the user's."""
    from PySide6.QtCore import QCoreApplication, QSettings

    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    QCoreApplication.setOrganizationName("MergeStudioTests")
    QCoreApplication.setApplicationName("merge-studio-tests")
    monkeypatch.setenv("MERGE_STUDIO_DATA_DIR", str(tmp_path / "data"))
    yield
