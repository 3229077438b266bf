"""GUI tests run offscreen, with settings in a temporary folder and tiny real checkpoints."""

from __future__ import annotations

import gc
import os
import warnings

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _qt_binding_workarounds():
    """The whole GUI suite makes far more Qt calls than one window session (see qt_compat)."""
    from merge_studio.gui.qt_compat import protect_none

    protect_none()


@pytest.fixture(scope="package", autouse=True)
def _collector_back_after_gui_tests():
    """Job runners move cyclic GC to the GUI thread; tests after this folder get the normal one back."""
    yield
    from merge_studio.gui import gc_guard

    gc_guard.uninstall()


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


@pytest.fixture(autouse=True)
def _no_unexpected_questions(monkeypatch):
    """A modal question nobody answers would hang the suite offscreen: fail loudly instead.
    Tests that expect one patch ``QMessageBox.question`` themselves."""
    from PySide6.QtWidgets import QMessageBox

    def unexpected(_parent, title, text, *_a, **_k):
        raise AssertionError(f"unexpected question: {title}: {text}")

    monkeypatch.setattr(QMessageBox, "question", unexpected)
    from merge_studio.gui import output_guard

    # Windows closed at the end of a test discard their edits; test_undo_and_unsaved asks for real.
    monkeypatch.setattr(output_guard, "confirm_discard_changes", lambda _parent: True)


def _running_qthreads() -> list:
    from PySide6.QtCore import QThread
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        return []
    return [t for t in app.findChildren(QThread) if t.isRunning()]


@pytest.fixture(autouse=True)
def _no_thread_left_running(qapp):
    """Every test must leave no QThread running behind it.

    Cyclic garbage (windows whose slots are lambdas over ``self``) is collected here,
    on the GUI thread: left to chance, Python's collector may run it on a job's
    worker thread, and a Qt timer destroyed there stays registered with the GUI
    thread's dispatcher and later fires into freed memory.
    """
    yield
    from PySide6.QtCore import QCoreApplication

    QCoreApplication.processEvents()
    gc.collect()
    QCoreApplication.processEvents()
    leftover = _running_qthreads()
    assert not leftover, f"threads still running after the test: {[t.objectName() for t in leftover]}"


def mlp_state(seed: int, hidden: int = 16, layers: int = 3) -> dict[str, torch.Tensor]:
    """A real small MLP's weights (Linear layers in a Sequential)."""
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    width = 8
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    mods.append(nn.Linear(width, 4))
    return {k: v.detach().clone().contiguous() for k, v in nn.Sequential(*mods).state_dict().items()}


def write_model(path: Path, seed: int, **kwargs) -> Path:
    save_file(mlp_state(seed, **kwargs), str(path))
    return path


@pytest.fixture
def tiny_models(tmp_path) -> list[Path]:
    """Three compatible tiny MLP checkpoints."""
    folder = tmp_path / "models"
    folder.mkdir()
    return [write_model(folder / f"mlp_{i}.safetensors", i) for i in range(3)]


@pytest.fixture
def odd_model(tmp_path) -> Path:
    """A checkpoint whose layers differ in width from ``tiny_models``."""
    return write_model(tmp_path / "wide.safetensors", 9, hidden=24)


@pytest.fixture
def truncated_model(tiny_models, tmp_path) -> Path:
    """The first 300 bytes of a real checkpoint: a download cut short."""
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(tiny_models[0].read_bytes()[:300])
    return path


@pytest.fixture
def window(qtbot):
    """The real main window; closing it stops its jobs."""
    from merge_studio.gui.main_window import MainWindow

    win = MainWindow()
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    yield win
    win.close()


def drop_files(qtbot, widget, paths) -> None:
    """Simulate a file manager dropping ``paths`` on ``widget`` (enter, move, drop)."""
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
    from PySide6.QtWidgets import QApplication

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    target = widget.viewport() if hasattr(widget, "viewport") else widget
    center = target.rect().center()
    actions = Qt.DropAction.CopyAction | Qt.DropAction.MoveAction
    with warnings.catch_warnings():  # PySide6 flags the QPoint constructors Qt itself still uses
        warnings.simplefilter("ignore", DeprecationWarning)
        enter = QDragEnterEvent(center, actions, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
        move = QDragMoveEvent(center, actions, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target, enter)
    assert enter.isAccepted(), "the widget refused the drag"
    QApplication.sendEvent(target, move)
    drop = QDropEvent(QPointF(center), actions, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target, drop)
    assert drop.isAccepted(), "the drop was not accepted"


def load_into(qtbot, window, paths, timeout: int = 10_000) -> None:
    """Open ``paths`` in the window and wait until every row finished loading."""
    with qtbot.waitSignal(window.sig_models_loaded, timeout=timeout):
        window.open_paths(paths)


@pytest.fixture
def view(qtbot):
    """A Graph tab on its own (900 × 700, shown), shut down after the test."""
    from merge_studio.gui.views.graph_view import GraphView

    widget = GraphView()
    qtbot.addWidget(widget)
    widget.resize(900, 700)
    widget.show()
    yield widget
    widget.shutdown()
