"""Item views of PythonQt's ``qt`` module: ``QTableWidget`` and ``QListWidget`` with their items, and the
``clickCell()`` / ``clickItem()`` test helpers."""

from __future__ import annotations

from typing import List, Optional

from .qt_core import QObject, Qt, qt_setter
from .qt_widgets import QWidget

#: The names the qt module stand-in takes from this file.
__all__ = ["QTableWidget", "QTableWidgetItem", "QListWidget", "QListWidgetItem", "QAbstractItemView"]


class _Item:
    """QTableWidgetItem / QListWidgetItem: the text is the display and edit role (qtbase qtablewidget.cpp)."""

    def __init__(self, text="") -> None:
        self._data = {Qt.DisplayRole: text}

    def text(self) -> str:
        return self._data.get(Qt.DisplayRole, "")

    def setText(self, text) -> None:
        self._data[Qt.DisplayRole] = text

    def setData(self, role, value) -> None:
        self._data[Qt.DisplayRole if role == Qt.EditRole else role] = value

    def data(self, role):
        return self._data.get(Qt.DisplayRole if role == Qt.EditRole else role)

    def setToolTip(self, text) -> None:
        self._data[Qt.ToolTipRole] = text


class QTableWidgetItem(_Item):
    pass


class QListWidgetItem(_Item):
    pass


class _HeaderView(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.stretchLastSection = False

    setStretchLastSection = qt_setter("stretchLastSection", bool)

    def setSectionResizeMode(self, *unused) -> None:
        pass


class QAbstractItemView:
    SelectItems, SelectRows, SelectColumns = 0, 1, 2
    NoEditTriggers = 0
    NoSelection, SingleSelection, MultiSelection, ExtendedSelection = 0, 1, 2, 3


class QTableWidget(QWidget):
    def __init__(self, rows=0, columns=0, parent=None) -> None:
        super().__init__(parent)
        self._rows: List[List[Optional[QTableWidgetItem]]] = [[None] * columns for _ in range(rows)]
        self._columns = columns
        self._header = _HeaderView()
        self.headerLabels: List[str] = []
        self._currentRow = -1

    def setHorizontalHeaderLabels(self, labels) -> None:
        self.headerLabels = list(labels)
        self._columns = max(self._columns, len(labels))

    def horizontalHeader(self) -> _HeaderView:
        return self._header

    setSelectionBehavior = qt_setter("selectionBehavior")
    setSelectionMode = qt_setter("selectionMode")
    setEditTriggers = qt_setter("editTriggers")

    def rowCount(self) -> int:
        return len(self._rows)

    def columnCount(self) -> int:
        return self._columns

    def setRowCount(self, count) -> None:
        count = int(count)
        del self._rows[count:]
        while len(self._rows) < count:
            self._rows.append([None] * self._columns)
        if self._currentRow >= count:
            self._currentRow = -1

    def setItem(self, row, column, item) -> None:
        if 0 <= row < len(self._rows) and 0 <= column < self._columns:
            self._rows[row][column] = item

    def item(self, row, column):
        if 0 <= row < len(self._rows) and 0 <= column < self._columns:
            return self._rows[row][column]
        return None

    def currentRow(self) -> int:
        return self._currentRow

    def setCurrentCell(self, row, column) -> None:
        self._currentRow = int(row) if 0 <= row < len(self._rows) else -1

    def clickCell(self, row, column) -> None:
        """Test helper: the user clicks a cell (it becomes current, then ``cellClicked(int,int)``)."""
        self.setCurrentCell(row, column)
        self._emit("cellClicked", row, column)

    def texts(self, column: int = 0) -> List[str]:
        return [row[column].text() if row[column] is not None else "" for row in self._rows]


class QListWidget(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._items: List[QListWidgetItem] = []

    def addItem(self, item) -> None:
        self._items.append(item if isinstance(item, _Item) else QListWidgetItem(str(item)))

    def count(self) -> int:
        return len(self._items)

    def item(self, row):
        return self._items[row] if 0 <= row < len(self._items) else None

    def clear(self) -> None:
        self._items = []

    def clickItem(self, row) -> None:
        """Test helper: the user clicks an item."""
        self._emit("itemClicked", self._items[row])

    def doubleClickItem(self, row) -> None:
        """Test helper: the user double-clicks an item (``itemClicked``, then ``itemDoubleClicked``)."""
        self.clickItem(row)
        self._emit("itemDoubleClicked", self._items[row])

    def texts(self) -> List[str]:
        return [item.text() for item in self._items]
