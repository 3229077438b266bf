"""The table model behind the model list and the coefficient table.

One ``QAbstractTableModel`` over the :class:`Session` so that the model list and
the method panel's coefficient table are two views of the same rows: an edit in
one shows in the other at once.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractTableModel, QByteArray, QMimeData, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import QApplication, QStyle

from merge_studio.core.methods.layered import is_layered
from merge_studio.gui.compat import CompatSummary
from merge_studio.gui.forms.field_widgets import FieldFacts, field_facts
from merge_studio.gui.forms.param_form import validation_errors
from merge_studio.gui.session import LoadedModel, Session

ROW_MIME = "application/x-merge-studio-model-ids"
FIXED_COLUMNS = ("Name", "Format", "Params", "Size", "Dtype")
COL_NAME, COL_FORMAT, COL_PARAMS, COL_SIZE, COL_DTYPE = range(len(FIXED_COLUMNS))
ERROR_COLOR = QColor("#c0392b")
MUTED_COLOR = QColor("#7f8c8d")
ModelIndex = QModelIndex | QPersistentModelIndex
SUBTITLE_ROLE = Qt.ItemDataRole.UserRole + 10  # the muted second line under a model's name
STATUS_ROLE = Qt.ItemDataRole.UserRole + 11  # "loading", "ready" or "error"


def human_count(n: int) -> str:
    """1234567 -> ``1.23 M`` (parameters)."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return str(n)


def human_bytes(n: int) -> str:
    """Sizes in binary units, as file managers show them."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 1e4 else f"{value:.4g}"
    if is_layered(value):
        return "per layer"
    return str(value)


class CheckpointTableModel(QAbstractTableModel):
    """Rows are the session's models; the last columns are the method's per-model params."""

    sig_reordered = Signal()
    """Rows were moved by drag and drop."""
    sig_params_edited = Signal()
    """A per-model parameter was edited in place."""

    def __init__(self, session: Session, parent=None) -> None:
        super().__init__(parent)
        self.session = session
        self.compat = CompatSummary()
        self._param_facts: list[FieldFacts] = []
        # model id -> (method's parameter class, the values checked, their problems): a cell is
        # asked for a dozen roles at every paint, and checking the values each time cost 35 ms a paint
        self._errors: dict[int, tuple[type, dict[str, Any], dict[str, str]]] = {}
        self._refresh_param_columns()

    # --- structure --------------------------------------------------------------------
    def _refresh_param_columns(self) -> None:
        mp = self.session.spec.model_params
        self._param_facts = [field_facts(n, i) for n, i in mp.model_fields.items()]

    @property
    def param_facts(self) -> list[FieldFacts]:
        return list(self._param_facts)

    def refresh(self, compat: CompatSummary | None = None) -> None:
        """Re-read everything from the session (rows, method columns, badges)."""
        self.beginResetModel()
        if compat is not None:
            self.compat = compat
        self._refresh_param_columns()
        self.endResetModel()

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self.session.models)

    def columnCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(FIXED_COLUMNS) + len(self._param_facts)

    def model_at(self, row: int) -> LoadedModel | None:
        models = self.session.models
        return models[row] if 0 <= row < len(models) else None

    def row_of(self, model_id: int) -> int:
        return next((i for i, m in enumerate(self.session.models) if m.id == model_id), -1)

    def param_column(self, key: str) -> int:
        return next(i for i, f in enumerate(self._param_facts) if f.key == key) + len(FIXED_COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if orientation != Qt.Orientation.Horizontal:
            return None
        facts = self._param_facts[section - len(FIXED_COLUMNS)] if section >= len(FIXED_COLUMNS) else None
        if role == Qt.ItemDataRole.DisplayRole:
            return FIXED_COLUMNS[section] if facts is None else facts.title
        if role == Qt.ItemDataRole.ToolTipRole and facts is not None:
            return f"{facts.title} (per model): {facts.description}\nDouble-click a cell to edit."
        return None

    def flags(self, index: ModelIndex) -> Qt.ItemFlag:
        base = Qt.ItemFlag.ItemIsDropEnabled
        if not index.isValid():
            return base
        flags = base | Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsDragEnabled
        model = self.model_at(index.row())
        if index.column() >= len(FIXED_COLUMNS) and model is not None and model.status != "error":
            value = self._param_value(model, index.column())
            if not is_layered(value):
                flags |= Qt.ItemFlag.ItemIsEditable
        return flags

    # --- data -------------------------------------------------------------------------
    def _param_value(self, model: LoadedModel, column: int) -> Any:
        facts = self._param_facts[column - len(FIXED_COLUMNS)]
        return self.session.model_params(model).get(facts.key)

    def param_errors(self, model: LoadedModel) -> dict[str, str]:
        spec, values = self.session.spec.model_params, self.session.model_params(model)
        cached = self._errors.get(model.id)
        if cached is not None and cached[0] is spec and cached[1] == values:
            return cached[2]
        errors = validation_errors(spec, values)
        self._errors[model.id] = (spec, values, errors)
        return errors

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        model = self.model_at(index.row())
        if model is None:
            return None
        col = index.column()
        if col >= len(FIXED_COLUMNS):
            return self._param_data(model, col, role)
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(model, col)
        if role == Qt.ItemDataRole.EditRole:
            return self._display(model, col)
        if role == Qt.ItemDataRole.ToolTipRole and col == COL_FORMAT and model.status == "error":
            return model.error
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(model)
        if role == Qt.ItemDataRole.DecorationRole and col == COL_NAME:
            return self._icon(model)
        if role == Qt.ItemDataRole.ForegroundRole:
            if model.status == "error":
                return QBrush(ERROR_COLOR)
            if model.status == "loading" or col in (COL_FORMAT, COL_DTYPE):
                return QBrush(MUTED_COLOR)
        if role == Qt.ItemDataRole.FontRole and model.id == self.session.base_id and col == COL_NAME:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (COL_PARAMS, COL_SIZE):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.UserRole:
            return model.id
        if role == SUBTITLE_ROLE and col == COL_NAME:
            return self._subtitle(model)
        if role == STATUS_ROLE:
            return model.status
        return None

    def _subtitle(self, model: LoadedModel) -> str:
        if model.status == "loading":
            return "loading…"
        if model.status == "error":
            return model.error.removeprefix(f"{model.path.name}: ")
        s = model.summary
        assert s is not None
        dtype = s.main_dtype if len(s.dtypes) <= 1 else f"{s.main_dtype} +{len(s.dtypes) - 1} more"
        parts = [s.format, dtype, f"{s.tensor_count} tensors"]
        if self._issues(model):
            parts.insert(0, "doesn't match the others (hover)")
        if not model.in_models and model.id != self.session.base_id:
            parts.insert(0, "not merged")
        return " · ".join(parts)

    def _display(self, model: LoadedModel, col: int) -> str:
        s = model.summary
        if col == COL_NAME:
            if model.id == self.session.base_id:
                return f"{model.name}  · base"
            return model.name
        if model.status == "loading":
            return "loading…" if col == COL_FORMAT else ""
        if model.status == "error":
            return model.error.removeprefix(f"{model.path.name}: ") if col == COL_FORMAT else ""
        assert s is not None
        return {
            COL_FORMAT: s.format,
            COL_PARAMS: human_count(s.parameter_count),
            COL_SIZE: human_bytes(s.file_bytes),
            COL_DTYPE: s.main_dtype if len(s.dtypes) <= 1 else f"{s.main_dtype} +{len(s.dtypes) - 1}",
        }[col]

    def _issues(self, model: LoadedModel) -> list[str]:
        return self.compat.issues.get(model.id, [])

    def _tooltip(self, model: LoadedModel) -> str:
        lines = [str(model.path)]
        if model.status == "error":
            lines.append(f"Cannot open: {model.error}")
        elif model.status == "loading":
            lines.append("Reading the header…")
        else:
            issues = self._issues(model)
            if issues:
                lines.append("Incompatible with the other models:")
                lines += [f"• {i}" for i in issues]
            s = model.summary
            if s is not None:
                lines.append(f"{s.tensor_count} tensors; dtypes: {', '.join(f'{k} ×{v}' for k, v in s.dtypes.items())}")
        if not model.in_models and model.id != self.session.base_id:
            lines.append("Listed but not merged (a merge's output is left out until you ask): "
                         "right-click ▸ Merge it too")
        if model.id == self.session.base_id:
            lines.append("This is the base model (task vectors are taken against it)"
                         + ("; the recipe does not list it among the merged models." if not model.in_models else "."))
        return "\n".join(lines)

    def _icon(self, model: LoadedModel):
        style = QApplication.style()
        if model.status == "error":
            return style.standardIcon(QStyle.StandardPixmap.SP_MessageBoxCritical)
        if model.status == "loading":
            return style.standardIcon(QStyle.StandardPixmap.SP_BrowserReload)
        if self._issues(model):
            return style.standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
        if model.path.is_dir():
            return style.standardIcon(QStyle.StandardPixmap.SP_DirIcon)
        return style.standardIcon(QStyle.StandardPixmap.SP_FileIcon)

    def _param_data(self, model: LoadedModel, col: int, role: int) -> Any:
        facts = self._param_facts[col - len(FIXED_COLUMNS)]
        value = self._param_value(model, col)
        if role == Qt.ItemDataRole.DisplayRole:
            return "" if model.status == "error" else format_value(value)
        if role == Qt.ItemDataRole.EditRole:
            return value
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.UserRole:
            return model.id
        if role not in (Qt.ItemDataRole.ToolTipRole, Qt.ItemDataRole.BackgroundRole, Qt.ItemDataRole.ForegroundRole):
            return None
        error = self.param_errors(model).get(facts.key) if model.status != "error" else None
        if role == Qt.ItemDataRole.ToolTipRole:
            if error:
                return f"Invalid: {error}\n\n{facts.description}"
            if is_layered(value):
                return f"Varies by layer (from the recipe): {value}\n\n{facts.description}"
            return facts.description
        if role == Qt.ItemDataRole.BackgroundRole and error:
            return QBrush(QColor("#fdecea"))
        if role == Qt.ItemDataRole.ForegroundRole and error:
            return QBrush(ERROR_COLOR)
        return None

    def setData(self, index: ModelIndex, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:  # noqa: N802
        if role != Qt.ItemDataRole.EditRole or index.column() < len(FIXED_COLUMNS):
            return False
        model = self.model_at(index.row())
        if model is None:
            return False
        facts = self._param_facts[index.column() - len(FIXED_COLUMNS)]
        self.session.set_model_param(model.id, facts.key, value)
        self.dataChanged.emit(index, index)
        self.sig_params_edited.emit()
        return True

    # --- drag and drop ----------------------------------------------------------------
    def supportedDropActions(self) -> Qt.DropAction:  # noqa: N802
        return Qt.DropAction.MoveAction | Qt.DropAction.CopyAction

    def supportedDragActions(self) -> Qt.DropAction:  # noqa: N802
        return Qt.DropAction.MoveAction

    def mimeTypes(self) -> list[str]:  # noqa: N802
        return [ROW_MIME, "text/uri-list"]

    def mimeData(self, indexes) -> QMimeData:  # noqa: N802
        ids = []
        for index in indexes:
            model = self.model_at(index.row())
            if model is not None and model.id not in ids:
                ids.append(model.id)
        mime = QMimeData()
        mime.setData(ROW_MIME, QByteArray(",".join(map(str, ids)).encode()))
        return mime

    def dropMimeData(self, data: QMimeData, action: Qt.DropAction, row: int, column: int, parent: ModelIndex) -> bool:  # noqa: N802
        """Move dragged rows to the drop position.

        Returns ``False`` after moving so the view does not also remove the "source"
        rows as it would after a real cross-model move.
        """
        if not data.hasFormat(ROW_MIME):
            return False
        ids = [int(x) for x in bytes(data.data(ROW_MIME).data()).decode().split(",") if x]
        if row < 0:
            row = parent.row() if parent.isValid() else len(self.session.models)
        target = self.model_at(row)
        self.beginResetModel()
        moving = [m for m in self.session.models if m.id in ids]
        rest = [m for m in self.session.models if m.id not in ids]
        at = rest.index(target) if target is not None and target in rest else len(rest)
        self.session.models = rest[:at] + moving + rest[at:]
        self.endResetModel()
        self.sig_reordered.emit()
        return False
