"""A small stand-in for the parts of the Slicer application that the MedSAM Qt effect touches, on REAL slicer-core.

There is no Slicer application (no Qt, no PythonQt) here. ``slicer-core`` gives the real MRML scene, nodes and
module logics, the real ``vtkSlicerSegmentEditorLogic`` and Slicer's real ``slicer/util.py``. What is missing is
stood in for here, each behaviour copied from Slicer's source (the file is named where it is copied):

* ``qt`` / ``ctk``: widgets as plain objects with Qt-property-style attributes, PythonQt-style
  ``connect("signal(args)", slot)``, and test helpers that act as the user does (``click()``, ``clickCell()``,
  ``clickItem()``, ``activate()``). A slot that raises is reported and swallowed, as PythonQt does, and recorded
  in :attr:`SlicerApplicationStandin.slot_errors` so that tests can assert that nothing raised out of a slot.
  Dialogs (``ctkMessageBox`` / ``QMessageBox``) are recorded in :attr:`SlicerApplicationStandin.dialogs`.
* an event loop (:class:`EventLoop`) that serves ``QTimer`` timeouts and records every tick and how long each
  timer callback took; ``run_until(predicate, timeout_s)`` is the test's ``app.exec()``.
* ``slicer.app`` (:class:`SlicerApplicationStandin`), ``slicer.modules.markups`` (the real Markups logic, its
  ``JumpSlicesToLocation`` calls recorded), ``slicer.qSlicerSegmentEditorAbstractEffect`` (its enum),
  ``slicer.ScriptedLoadableModule`` (so that the real ``MedSAMSegment.py`` imports).
* the Segment Editor: the scripted effect adaptor (:class:`ScriptedEffectStandin`, after
  ``qSlicerSegmentEditorScriptedEffect.cxx`` and ``qSlicerSegmentEditorAbstractEffect.cxx``) and the editor widget
  (:class:`SegmentEditorWidgetStandin`, after ``qMRMLSegmentEditorWidget.cxx``) that activates effects and
  forwards interaction node changes to the active one.
* slice views and mouse clicks (:class:`SliceViewsStandin`): real ``vtkMRMLSliceNode`` views Red / Yellow / Green
  and the markups placement of ``vtkMRMLMarkupsDisplayableManager.cxx`` and ``vtkSlicerMarkupsWidget.cxx``, driving
  the real ``vtkMRMLMarkupsDisplayNode::UpdateActiveControlPointWorld`` (so the ROI and line nodes update
  themselves as in the application) and the real ``vtkMRMLInteractionNode``.

Slicer source files cited below are paths in the Slicer/Slicer repository.

Use :func:`install` from a fixture (it takes pytest's ``monkeypatch``, so everything is undone after the test).
"""

from __future__ import annotations

import inspect
import os
import sys
import time
import traceback
import types
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

slicer = __import__("slicer")
vtk = __import__("vtk")


# ---------------------------------------------------------------------------------------------------------
# Event loop and timers


@dataclass
class Tick:
    """One timer timeout served by the loop: when it started (``time.monotonic``) and how long its slots took."""

    timer: QTimer
    started: float
    seconds: float


class EventLoop:
    """Serves QTimer timeouts; records every tick and the longest callback.

    Repeating timers follow Qt's ``QTimerInfoList::activateTimers`` (qtbase src/corelib/kernel/qtimerinfo_unix.cpp):
    after a timeout the next one is due one interval after the previous due time, or one interval from now when
    the loop has fallen behind.
    """

    def __init__(self, app: SlicerApplicationStandin) -> None:
        self.app = app
        self.timers: List[QTimer] = []
        self.ticks: List[Tick] = []
        self._serving = False

    def add(self, timer: QTimer) -> None:
        if timer not in self.timers:
            self.timers.append(timer)

    def remove(self, timer: QTimer) -> None:
        if timer in self.timers:
            self.timers.remove(timer)

    def serve_due(self) -> int:
        """Fire every active timer that is due now (once each); returns how many fired."""
        if self._serving:  # processEvents() from inside a timer slot: Qt does not re-enter that timer either
            return 0
        self._serving = True
        fired = 0
        try:
            now = time.monotonic()
            for timer in [t for t in self.timers if t._active and t._due <= now]:
                if not timer._active:
                    continue
                if timer._single:
                    timer._active = False
                    self.remove(timer)
                else:
                    timer._due += timer.interval / 1000.0
                    if timer._due < now:
                        timer._due = now + timer.interval / 1000.0
                started = time.monotonic()
                timer._emit("timeout")
                self.ticks.append(Tick(timer, started, time.monotonic() - started))
                fired += 1
        finally:
            self._serving = False
        return fired

    def next_due(self) -> Optional[float]:
        dues = [t._due for t in self.timers if t._active]
        return min(dues) if dues else None

    def run_until(self, predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.002) -> bool:
        """Serve due timers (sleeping in small steps otherwise) until ``predicate()`` is true or time runs out."""
        deadline = time.monotonic() + timeout_s
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return bool(predicate())
            if not self.serve_due():
                due = self.next_due()
                wait = step_s if due is None else min(step_s, max(0.0, due - time.monotonic()))
                time.sleep(max(wait, 0.0005))

    def run_for(self, seconds: float) -> None:
        self.run_until(lambda: False, seconds)

    # -- what tests read ------------------------------------------------------------------------------------
    def ticks_of(self, timer: QTimer, since: float = 0.0) -> List[Tick]:
        return [t for t in self.ticks if t.timer is timer and t.started >= since]

    @staticmethod
    def gaps(ticks: List[Tick]) -> List[float]:
        """Seconds between the starts of consecutive ticks."""
        return [b.started - a.started for a, b in zip(ticks, ticks[1:])]

    def longest_callback(self, since: float = 0.0) -> float:
        return max((t.seconds for t in self.ticks if t.started >= since), default=0.0)


# ---------------------------------------------------------------------------------------------------------
# PythonQt-style signals


def _signal_name(signature: str) -> Tuple[str, int]:
    """``"cellClicked(int,int)"`` -> ``("cellClicked", 2)``; ``"clicked()"`` -> ``("clicked", 0)``."""
    signature = signature.strip()
    if signature[:1].isdigit():  # Qt's SIGNAL() macro prefixes "2"
        signature = signature[1:]
    if "(" not in signature:
        return signature, -1
    name, args = signature.split("(", 1)
    args = args.rstrip(")").strip()
    return name, (len([a for a in args.split(",") if a.strip()]) if args else 0)


def _accepted_argument_count(slot) -> Optional[int]:
    """How many positional arguments ``slot`` takes (None: any). PythonQt drops the signal's surplus arguments
    when the Python callable takes fewer (PythonQt src/PythonQtSignalReceiver.cpp, ``PythonQtSignalTarget::call``)."""
    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return None
    count = 0
    for parameter in parameters:
        if parameter.kind == parameter.VAR_POSITIONAL:
            return None
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


class QObject:
    """Signals and slots the PythonQt way: ``connect("name(types)", callable)``; ``blockSignals``."""

    def __init__(self, parent=None) -> None:
        self.__dict__["_connections"] = {}
        self.__dict__["_blocked"] = False
        self.objectName = ""
        self._parent = parent

    def connect(self, signature: str, slot) -> bool:
        name, count = _signal_name(signature)
        self._connections.setdefault(name, []).append((count, slot))
        return True

    def disconnect(self, signature: str, slot=None) -> bool:
        name, _ = _signal_name(signature)
        kept = [(c, s) for c, s in self._connections.get(name, []) if slot is not None and s != slot]
        self._connections[name] = kept
        return True

    def blockSignals(self, block: bool) -> bool:
        previous = self._blocked
        self.__dict__["_blocked"] = bool(block)
        return previous

    def signalsBlocked(self) -> bool:
        return self._blocked

    def deleteLater(self) -> None:
        pass

    def parent(self):
        return self._parent

    def setParent(self, parent) -> None:
        self._parent = parent

    def _emit(self, name: str, *args) -> None:
        """Qt emits to each connection in order; a blocked object emits nothing (QObject::blockSignals)."""
        if self._blocked:
            return
        for count, slot in list(self._connections.get(name, [])):
            passed = list(args) if count < 0 else list(args[:count])
            accepted = _accepted_argument_count(slot)
            if accepted is not None:
                passed = passed[:accepted]
            APP.invoke(slot, passed, f"{type(self).__name__}.{name}")


class _ApplicationHolder:
    """The stand-in application that the widgets report to (set by :func:`install`)."""

    app: Optional[SlicerApplicationStandin] = None

    def invoke(self, slot, args, what):
        if self.app is None:
            return slot(*args)
        return self.app.invoke(slot, args, what)


APP = _ApplicationHolder()


# ---------------------------------------------------------------------------------------------------------
# Widgets (qt module)


class Qt:
    """The values of Qt's enums that the effect and slicer.util use (qtbase src/corelib/global/qnamespace.h)."""

    DisplayRole = 0
    EditRole = 2
    ToolTipRole = 3
    UserRole = 0x0100
    Key_Escape = 0x01000000
    Key_Delete = 0x01000007
    Key_Space = 0x20
    WidgetShortcut = 0
    WidgetWithChildrenShortcut = 3
    WindowShortcut = 1
    ApplicationShortcut = 2
    ArrowCursor = 0
    WaitCursor = 3
    Unchecked = 0
    Checked = 2
    AlignLeft = 0x1


class QWidget(QObject):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.enabled = True
        self.visible = True
        self.toolTip = ""
        self.windowTitle = ""
        self.layout_ = None

    def setEnabled(self, enabled) -> None:
        self.enabled = bool(enabled)

    def isEnabled(self) -> bool:
        return self.enabled

    def setVisible(self, visible) -> None:
        self.visible = bool(visible)

    def isVisible(self) -> bool:
        return self.visible

    def show(self) -> None:
        self.visible = True

    def hide(self) -> None:
        self.visible = False

    def close(self) -> bool:
        self.visible = False
        return True

    def setToolTip(self, text) -> None:
        self.toolTip = text

    def setLayout(self, layout) -> None:
        self.layout_ = layout

    def layout(self):
        return self.layout_


class _Layout(QObject):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.items: List[object] = []
        if isinstance(parent, QWidget):
            parent.setLayout(self)

    def addWidget(self, widget, *unused) -> None:
        self.items.append(widget)

    def addLayout(self, layout, *unused) -> None:
        self.items.append(layout)

    def addRow(self, *items) -> None:
        self.items.extend(items)

    def count(self) -> int:
        return len(self.items)


class QHBoxLayout(_Layout):
    pass


class QVBoxLayout(_Layout):
    pass


class QFormLayout(_Layout):
    pass


class QLabel(QWidget):
    def __init__(self, text="", parent=None) -> None:
        super().__init__(parent)
        self.text = text
        self.wordWrap = False

    def setText(self, text) -> None:
        self.text = text


class QAbstractButton(QWidget):
    """``click()`` acts as a user's click: nothing when disabled; a checkable button toggles, then ``clicked``
    (qtbase src/widgets/widgets/qabstractbutton.cpp, ``QAbstractButton::click`` / ``nextCheckState``)."""

    def __init__(self, text="", parent=None) -> None:
        super().__init__(parent)
        self.text = text
        self.checkable = False
        self.__dict__["_checked"] = False

    @property
    def checked(self) -> bool:
        return self._checked

    @checked.setter
    def checked(self, value) -> None:
        # QAbstractButton::setChecked: ignored unless checkable; emits toggled(bool) only on a change.
        value = bool(value)
        if not self.checkable or value == self._checked:
            return
        self.__dict__["_checked"] = value
        self._emit("toggled", value)

    def setChecked(self, value) -> None:
        self.checked = value

    def isChecked(self) -> bool:
        return self.checked

    def setText(self, text) -> None:
        self.text = text

    def click(self) -> None:
        if not self.enabled:
            return
        if self.checkable:
            self.checked = not self.checked
        self._emit("clicked", self.checked)


class QPushButton(QAbstractButton):
    pass


class QToolButton(QAbstractButton):
    pass


class QCheckBox(QAbstractButton):
    def __init__(self, text="", parent=None) -> None:
        super().__init__(text, parent)
        self.checkable = True


class QProgressBar(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.minimum = 0
        self.maximum = 100
        self.value = -1
        self.format = "%p%"
        self.textVisible = True
        self.history: List[Tuple[str, object]] = []  # (property, value) for tests

    def __setattr__(self, name, value) -> None:
        if name in ("maximum", "value", "format", "visible") and "history" in self.__dict__:
            self.history.append((name, value))
        super().__setattr__(name, value)

    def setValue(self, value) -> None:
        self.value = value

    def setMaximum(self, value) -> None:
        self.maximum = value

    def setFormat(self, value) -> None:
        self.format = value


class QComboBox(QWidget):
    """Items are ``(text, data)``; adding the first item selects it and emits ``currentIndexChanged``, as
    ``setCurrentIndex`` does on every change (qtbase src/widgets/widgets/qcombobox.cpp)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.items: List[Tuple[str, object]] = []
        self.__dict__["_index"] = -1

    def addItem(self, text, userData=None) -> None:
        self.items.append((text, userData))
        if self._index < 0:
            self.setCurrentIndex(0)

    def count(self) -> int:
        return len(self.items)

    def clear(self) -> None:
        self.items = []
        self.setCurrentIndex(-1)

    def findData(self, data) -> int:
        for n, (_, value) in enumerate(self.items):
            if value == data:
                return n
        return -1

    def findText(self, text) -> int:
        for n, (value, _) in enumerate(self.items):
            if value == text:
                return n
        return -1

    def itemData(self, index):
        return self.items[index][1] if 0 <= index < len(self.items) else None

    def itemText(self, index) -> str:
        return self.items[index][0] if 0 <= index < len(self.items) else ""

    def setCurrentIndex(self, index) -> None:
        index = int(index)
        if not -1 <= index < len(self.items):
            index = -1
        if index == self._index:
            return
        self.__dict__["_index"] = index
        self._emit("currentIndexChanged", index)

    @property
    def currentIndex(self) -> int:
        return self._index

    @currentIndex.setter
    def currentIndex(self, index) -> None:
        self.setCurrentIndex(index)

    @property
    def currentData(self):
        return self.itemData(self._index)

    @property
    def currentText(self) -> str:
        return self.itemText(self._index)

    def select(self, data) -> None:
        """Test helper: the user picks the item holding ``data``."""
        index = self.findData(data)
        if index < 0:
            raise ValueError(f"no item with data {data!r}")
        self.setCurrentIndex(index)


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

    def setStretchLastSection(self, value) -> None:
        self.stretchLastSection = bool(value)

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

    def setSelectionBehavior(self, value) -> None:
        self.selectionBehavior = value

    def setSelectionMode(self, value) -> None:
        self.selectionMode = value

    def setEditTriggers(self, value) -> None:
        self.editTriggers = value

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


class QKeySequence:
    Undo, Redo = "Undo", "Redo"

    def __init__(self, key) -> None:
        self.key = key


class QShortcut(QObject):
    def __init__(self, keySequence=None, parent=None) -> None:
        super().__init__(parent)
        self.key = keySequence
        self.context = Qt.WindowShortcut
        self.enabled = True

    def setContext(self, context) -> None:
        self.context = context

    def activate(self) -> None:
        """Test helper: the user presses the key."""
        if self.enabled:
            self._emit("activated")


class QIcon:
    def __init__(self, path=None) -> None:
        self.path = path

    def isNull(self) -> bool:
        return not self.path


class QCursor:
    def __init__(self, shape=Qt.ArrowCursor) -> None:
        self._shape = shape

    def shape(self):
        return self._shape


class QTimer(QObject):
    """Served by :class:`EventLoop`. ``start()`` (re)starts the countdown; ``stop()`` ends it (qtimer.cpp)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.interval = 0
        self._single = False
        self._active = False
        self._due = 0.0

    def setInterval(self, msec) -> None:
        self.interval = int(msec)

    def setSingleShot(self, value) -> None:
        self._single = bool(value)

    def isSingleShot(self) -> bool:
        return self._single

    def start(self, msec=None) -> None:
        if msec is not None:
            self.interval = int(msec)
        self._active = True
        self._due = time.monotonic() + self.interval / 1000.0
        _loop().add(self)

    def stop(self) -> None:
        self._active = False
        _loop().remove(self)

    def isActive(self) -> bool:
        return self._active


def _single_shot(msec, slot) -> None:
    """``QTimer.singleShot(msec, callable)``."""
    timer = QTimer()
    timer._single = True
    timer.connect("timeout()", slot)
    timer.start(msec)


QTimer.singleShot = staticmethod(_single_shot)


def _loop() -> EventLoop:
    if APP.app is None:
        raise RuntimeError("the Slicer stand-in is not installed")
    return APP.app.loop


class QMessageBox(QWidget):
    """Constants from qtbase src/widgets/dialogs/qmessagebox.h; ``exec_`` records the dialog and returns Ok."""

    NoButton, Ok, Save, Open, Yes, No, Abort, Retry, Ignore, Close, Cancel = (
        0, 0x400, 0x800, 0x2000, 0x4000, 0x10000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000)
    NoIcon, Information, Warning, Critical, Question = 0, 1, 2, 3, 4
    InvalidRole, AcceptRole, RejectRole, YesRole, NoRole = -1, 0, 1, 5, 6

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.text = ""
        self.icon = QMessageBox.NoIcon
        self.standardButtons = QMessageBox.Ok
        self.detailedText = ""
        self.visible = False

    def setText(self, text) -> None:
        self.text = text

    def setStandardButtons(self, buttons) -> None:
        self.standardButtons = buttons

    def setIcon(self, icon) -> None:
        self.icon = icon

    def setWindowTitle(self, title) -> None:
        self.windowTitle = title

    def setDetailedText(self, text) -> None:
        self.detailedText = text

    def exec_(self) -> int:
        APP.app.record_dialog(self)
        return QMessageBox.Ok

    exec = exec_

    def show(self) -> None:  # a non-modal box (slicer.util.MessageDialog)
        self.visible = True
        APP.app.record_dialog(self)

    def accept(self) -> None:
        self.visible = False


class QDialog(QWidget):
    def exec_(self) -> int:
        APP.app.record_dialog(self)
        return 1


class QApplication:
    """The override cursor stack (slicer.util.WaitCursor / _temporaryNormalCursor use it)."""

    @staticmethod
    def setOverrideCursor(cursor) -> None:
        APP.app.setOverrideCursor(cursor)

    @staticmethod
    def restoreOverrideCursor() -> None:
        APP.app.restoreOverrideCursor()

    @staticmethod
    def overrideCursor():
        return APP.app.overrideCursor()

    @staticmethod
    def processEvents() -> None:
        APP.app.processEvents()


def make_qt_module() -> types.ModuleType:
    module = types.ModuleType("qt")
    module.__doc__ = "Stand-in for PythonQt's qt module (Testing/slicer_app_standin.py)."
    for obj in (Qt, QObject, QWidget, QHBoxLayout, QVBoxLayout, QFormLayout, QLabel, QAbstractButton, QPushButton,
                QToolButton, QCheckBox, QProgressBar, QComboBox, QTableWidget, QTableWidgetItem, QListWidget,
                QListWidgetItem, QAbstractItemView, QKeySequence, QShortcut, QIcon, QCursor, QTimer, QMessageBox,
                QDialog, QApplication):
        setattr(module, obj.__name__, obj)
    return module


# ctk ---------------------------------------------------------------------------------------------------


class ctkPathLineEdit(QWidget):
    """``currentPath`` emits ``currentPathChanged(QString)`` on a change (CTK Libs/Widgets/ctkPathLineEdit.cpp);
    filter flags from ctkPathLineEdit.h."""

    Dirs, Files, Drives, NoSymLinks, AllEntries = 0x001, 0x002, 0x004, 0x008, 0x007
    Readable, Writable, Executable = 0x010, 0x020, 0x040

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.filters = ctkPathLineEdit.AllEntries
        self.nameFilters: List[str] = []
        self.__dict__["_path"] = ""

    @property
    def currentPath(self) -> str:
        return self._path

    @currentPath.setter
    def currentPath(self, path) -> None:
        path = "" if path is None else str(path)
        if path == self._path:
            return
        self.__dict__["_path"] = path
        self._emit("currentPathChanged", path)

    def setCurrentPath(self, path) -> None:
        self.currentPath = path


class ctkMessageBox(QMessageBox):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.dontShowAgainSettingsKey = ""
        self.dontShowAgainVisible = False


def make_ctk_module() -> types.ModuleType:
    module = types.ModuleType("ctk")
    module.__doc__ = "Stand-in for CTK's Python module (Testing/slicer_app_standin.py)."
    module.ctkPathLineEdit = ctkPathLineEdit
    module.ctkMessageBox = ctkMessageBox
    return module


# ---------------------------------------------------------------------------------------------------------
# slicer.app, slicer.modules


class MainWindowStandin(QWidget):
    """Found by ``slicer.util.mainWindow()`` through ``slicer.app.topLevelWidgets()`` and its objectName."""

    def __init__(self) -> None:
        super().__init__()
        self.objectName = "qSlicerMainWindow"
        self.status_messages: List[Tuple[str, int]] = []
        self._status = types.SimpleNamespace(showMessage=lambda m, d=0: self.status_messages.append((m, d)))

    def statusBar(self):
        return self._status


@dataclass
class Dialog:
    title: str
    text: str
    icon: int
    detailed: str = ""


@dataclass
class SlotError:
    where: str
    error: BaseException
    text: str


class SlicerApplicationStandin(QObject):
    """``slicer.app``: the application logic (real), the event loop, dialogs, cursors, and the slot error log."""

    applicationName = "Slicer"
    applicationVersion = "5.10.0"

    def __init__(self, app_logic) -> None:
        super().__init__()
        self._app_logic = app_logic
        self.loop = EventLoop(self)
        self.dialogs: List[Dialog] = []
        self.slot_errors: List[SlotError] = []
        self.cursor_stack: List[QCursor] = []
        self.main_window = MainWindowStandin()
        self.slot_seconds: List[Tuple[str, float]] = []  # every slot call: (what, seconds)
        self.critical_messages: List[str] = []

    # slicer.app API used by the effect and slicer.util
    def applicationLogic(self):
        return self._app_logic

    def processEvents(self) -> None:
        self.loop.serve_due()

    def testingEnabled(self) -> bool:
        return False

    def topLevelWidgets(self):
        return [self.main_window]

    def mainWindow(self):
        return self.main_window

    def layoutManager(self):
        return None

    def setOverrideCursor(self, cursor) -> None:
        self.cursor_stack.append(cursor if isinstance(cursor, QCursor) else QCursor(cursor))

    def restoreOverrideCursor(self) -> None:
        if self.cursor_stack:
            self.cursor_stack.pop()

    def overrideCursor(self):
        return self.cursor_stack[-1] if self.cursor_stack else None

    # what the stand-in records
    def critical(self, message: str) -> None:
        """A qCritical() message of Slicer's C++ code (printed to the application log)."""
        self.critical_messages.append(message)
        print(f"[CRITICAL] {message}", file=sys.stderr)

    def record_dialog(self, box: QWidget) -> None:
        self.dialogs.append(Dialog(getattr(box, "windowTitle", ""), getattr(box, "text", ""),
                                   getattr(box, "icon", 0), getattr(box, "detailedText", "")))

    def invoke(self, slot, args, what: str):
        """Call a slot as PythonQt does: an exception is printed and swallowed (PythonQt::handleError), here also
        recorded in :attr:`slot_errors`."""
        started = time.monotonic()
        try:
            return slot(*args)
        except Exception as exc:  # noqa: BLE001 - what PythonQt does with a slot's exception
            text = traceback.format_exc()
            self.slot_errors.append(SlotError(what, exc, text))
            print(f"[slot {what}] {text}", file=sys.stderr)
            return None
        finally:
            self.slot_seconds.append((what, time.monotonic() - started))


class MarkupsLogicStandin:
    """``slicer.modules.markups.logic()``: the real vtkSlicerMarkupsLogic, with JumpSlicesToLocation calls recorded."""

    def __init__(self, logic) -> None:
        self._logic = logic
        self.jumps: List[Tuple[float, float, float, bool]] = []

    def JumpSlicesToLocation(self, x, y, z, centered, *more):
        self.jumps.append((float(x), float(y), float(z), bool(centered)))
        return self._logic.JumpSlicesToLocation(x, y, z, centered, *more)

    def __getattr__(self, name):
        return getattr(self._logic, name)


# ---------------------------------------------------------------------------------------------------------
# The Segment Editor: scripted effect adaptor and editor widget

#: qSlicerSegmentEditorAbstractEffect::ModificationMode (qSlicerSegmentEditorAbstractEffect.h)
MODIFICATION_MODES = ("ModificationModeSet", "ModificationModeAdd", "ModificationModeRemove",
                      "ModificationModeRemoveAll")
_MISSING = object()


class AbstractScriptedSegmentEditorEffect:
    """What the effect inherits from Slicer's
    Modules/Loadable/Segmentations/EditorEffects/Python/SegmentEditorEffects/AbstractScriptedSegmentEditorEffect.py:
    ``__init__`` keeps the adaptor, ``register`` adds it to the factory, ``cleanup`` does nothing. It deliberately
    defines no ``interactionNodeModified``: then the C++ default runs."""

    def __init__(self, scriptedEffect) -> None:
        self.scriptedEffect = scriptedEffect

    def register(self) -> None:
        slicer.qSlicerSegmentEditorEffectFactory.instance().registerEffect(self.scriptedEffect)

    def cleanup(self) -> None:
        pass


class EffectFactoryStandin:
    _instance = None

    def __init__(self) -> None:
        self.effects: List[ScriptedEffectStandin] = []

    @classmethod
    def instance(cls) -> EffectFactoryStandin:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def registerEffect(self, effect) -> bool:
        self.effects.append(effect)
        return True

    def registeredEffects(self):
        return list(self.effects)


class ScriptedEffectStandin(QObject):
    """``qSlicerSegmentEditorScriptedEffect``: the C++ adaptor that owns the Python effect object.

    * ``setPythonSource`` loads the file as the module named after its folder and instantiates the class named
      after the file (qSlicerSegmentEditorScriptedEffect.cxx, qSlicerScriptedUtils.cxx ``loadSourceAsModule``); the
      Python methods that exist at that moment are the ones called (qSlicerPythonCppAPI::instantiateClass).
    * a declared method the Python object lacks, or one that raises (PythonQt prints the error and
      ``callMethod`` returns null), falls back to the C++ default: for ``interactionNodeModified`` that is
      ``qSlicerSegmentEditorAbstractEffect::interactionNodeModified`` = ``selectEffect("")`` unless the mode is
      ViewTransform; ``updateGUIFromMRML`` runs only while the effect is active.
    * parameters are attributes ``<effect name>.<name>`` of the segment editor node
      (qSlicerSegmentEditorAbstractEffect.cxx ``setParameter`` -> ``setCommonParameter``, ``parameter`` which also
      looks for the unprefixed common parameter, ``parameterDefined``, ``setParameterDefault``).
    * ``modifySelectedSegmentByLabelmap`` -> ``vtkSlicerSegmentEditorLogic::ModifySegmentByLabelmap`` with
      ``perSegment()`` and ``bypassMasking``; ``saveStateForUndo`` and ``defaultModifierLabelmap`` go to the editor
      widget's slots, which call the logic (qMRMLSegmentEditorWidget.cxx ``saveStateForUndo`` / ``updateVolume``,
      vtkSlicerSegmentEditorLogic.cxx ``UpdateVolume``: the modifier labelmap -> ``ResetModifierLabelmapToDefault``).
    """

    #: Methods qSlicerSegmentEditorScriptedEffect declares (its constructor's ``declareMethod`` calls).
    DECLARED = ("icon", "helpText", "clone", "activate", "deactivate", "setupOptionsFrame", "createCursor",
                "processInteractionEvents", "processViewNodeEvents", "setMRMLDefaults", "referenceGeometryChanged",
                "sourceVolumeNodeChanged", "masterVolumeNodeChanged", "layoutChanged", "interactionNodeModified",
                "updateGUIFromMRML", "updateMRMLFromGUI", "cleanup")

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.name = "UnnamedScriptedEffect"
        self.title = ""
        self.perSegment = False
        self.requireSegments = True
        self._active = False
        self._self = None
        self._methods: Dict[str, object] = {}
        self._parameterSetNode = None
        self._editor: Optional[SegmentEditorWidgetStandin] = None
        self.optionsWidgets: List[Tuple[str, object]] = []  # (label, widget or layout)
        self.source = ""

    # -- Python side -------------------------------------------------------------------------------------
    def setPythonSource(self, path: str) -> bool:
        if not path.endswith((".py", ".pyc")):
            return False
        module_name = os.path.basename(os.path.dirname(path))
        class_name = os.path.splitext(os.path.basename(path))[0]
        if not class_name.endswith("Effect"):
            class_name += "Effect"
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if cls is None:
            import importlib.util

            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
            cls = getattr(module, class_name)
        self.source = path
        self.instantiate(cls)
        setattr(slicer, module_name, self._self)  # qSlicerScriptedUtils::setModuleAttribute("slicer", ...)
        return True

    def instantiate(self, cls) -> None:
        """``qSlicerPythonCppAPI::instantiateClass``: construct, then keep the declared methods it has."""
        self._self = cls(self)
        self._methods = {name: getattr(self._self, name) for name in self.DECLARED if hasattr(self._self, name)}

    def self(self):
        return self._self

    def _call(self, name: str, *args):
        """``qSlicerPythonCppAPI::callMethod``: _MISSING when the method is absent or raised (error printed)."""
        method = self._methods.get(name)
        if method is None:
            return _MISSING
        app = APP.app
        started = time.monotonic()
        try:
            return method(*args)
        except Exception as exc:  # noqa: BLE001 - PythonQt::handleError prints it; the caller sees null
            text = traceback.format_exc()
            if app is not None:
                app.slot_errors.append(SlotError(f"{self.name}.{name}", exc, text))
            print(f"[effect {self.name}.{name}] {text}", file=sys.stderr)
            return _MISSING
        finally:
            if app is not None:
                app.slot_seconds.append((f"{self.name}.{name}", time.monotonic() - started))

    # -- qSlicerSegmentEditorAbstractEffect ---------------------------------------------------------------
    def activate(self) -> None:
        self._active = True  # base class first (qSlicerSegmentEditorAbstractEffect::activate) ...
        self.updateGUIFromMRML()
        self._call("activate")  # ... then the Python method

    def deactivate(self) -> None:
        self._active = False
        self._call("deactivate")

    def active(self) -> bool:
        return self._active

    def setupOptionsFrame(self) -> None:
        self._call("setupOptionsFrame")

    def setMRMLDefaults(self) -> None:
        self._call("setMRMLDefaults")

    def updateGUIFromMRML(self) -> None:
        if not self.active():
            return
        self._call("updateGUIFromMRML")

    def updateMRMLFromGUI(self) -> None:
        self._call("updateMRMLFromGUI")

    def cleanup(self) -> None:
        self._call("cleanup")

    def interactionNodeModified(self, interactionNode) -> None:
        if self._call("interactionNodeModified", interactionNode) is _MISSING:
            # qSlicerSegmentEditorAbstractEffect::interactionNodeModified
            mode = interactionNode.GetCurrentInteractionMode() if interactionNode is not None else None
            if mode is not None and mode != interactionNode.ViewTransform:
                self.selectEffect("")

    def helpText(self) -> str:
        result = self._call("helpText")
        return "" if result is _MISSING else result

    def icon(self):
        result = self._call("icon")
        return QIcon() if result is _MISSING else result

    def clone(self):
        result = self._call("clone")
        return None if result is _MISSING else result

    def selectEffect(self, name: str) -> None:
        if self._editor is not None:
            self._editor.setActiveEffectByName(name)

    def addOptionsWidget(self, widget) -> None:
        self.optionsWidgets.append(("", widget))

    def addLabeledOptionsWidget(self, label, widget):
        self.optionsWidgets.append((label, widget))
        return widget

    def parameterSetNode(self):
        return self._parameterSetNode

    def setParameterSetNode(self, node) -> None:
        self._parameterSetNode = node

    def _attribute(self, name: str) -> str:
        return f"{self.name}.{name}"

    def parameter(self, name: str) -> str:
        node = self._parameterSetNode
        if node is None:
            return ""
        value = node.GetAttribute(self._attribute(name))
        if value is None:
            value = node.GetAttribute(name)
        if value is None:
            APP.app.critical(f"qSlicerSegmentEditorAbstractEffect::parameter: Parameter named {name} cannot be "
                             f"found for effect {self.name}")
            return ""
        return value

    def integerParameter(self, name: str) -> int:
        try:
            return int(self.parameter(name))
        except ValueError:
            return 0

    def doubleParameter(self, name: str) -> float:
        try:
            return float(self.parameter(name))
        except ValueError:
            return 0.0

    def parameterDefined(self, name: str) -> bool:
        return self.commonParameterDefined(self._attribute(name))

    def commonParameterDefined(self, name: str) -> bool:
        node = self._parameterSetNode
        value = node.GetAttribute(name) if node is not None else None
        return bool(value)

    def setParameter(self, name: str, value) -> None:
        self.setCommonParameter(self._attribute(name), value)

    def setParameterDefault(self, name: str, value) -> None:
        if self.parameterDefined(name):
            return
        self.setParameter(name, value)

    def setCommonParameter(self, name: str, value) -> None:
        """qSlicerSegmentEditorAbstractEffect::setCommonParameter: a change is written with the node's Modified
        event disabled, then EffectParameterModified is invoked."""
        node = self._parameterSetNode
        if node is None:
            return
        value = "" if value is None else (str(value) if not isinstance(value, str) else value)
        old = node.GetAttribute(name)
        if old is None and value == "":
            return
        if old == value:
            return
        disabled = node.GetDisableModifiedEvent()
        node.SetDisableModifiedEvent(1)
        node.SetAttribute(name, value)
        node.SetDisableModifiedEvent(disabled)
        node.InvokeCustomModifiedEvent(slicer.vtkMRMLSegmentEditorNode.EffectParameterModified)

    def setCommonParameterDefault(self, name: str, value) -> None:
        if self.commonParameterDefined(name):
            return
        self.setCommonParameter(name, value)

    def saveStateForUndo(self) -> None:
        self._editor.saveStateForUndo()

    def defaultModifierLabelmap(self):
        return self._editor.updateModifierLabelmap()

    def modifierLabelmap(self):
        return self._editor.logic.GetModifierLabelmap()

    def modifySelectedSegmentByLabelmap(self, modifierLabelmap, modificationMode, extent=None,
                                        bypassMasking: bool = False) -> None:
        if isinstance(extent, bool):  # the overload without an extent
            extent, bypassMasking = None, extent
        extent = [0, -1, 0, -1, 0, -1] if extent is None else [int(v) for v in extent]
        if len(extent) != 6:
            print("modifySelectedSegmentByLabelmap failed: extent must have 6 int values", file=sys.stderr)
            return
        node = self._parameterSetNode
        logic = self._editor.logic
        mode = getattr(logic, MODIFICATION_MODES[int(modificationMode)])
        logic.ModifySegmentByLabelmap(node.GetSegmentationNode(), node.GetSelectedSegmentID() or "",
                                      modifierLabelmap, mode, extent, bool(self.perSegment), bool(bypassMasking))


class SegmentEditorWidgetStandin:
    """``qMRMLSegmentEditorWidget`` as far as effects see it (qMRMLSegmentEditorWidget.cxx):

    * the active effect is the parameter node's ActiveEffectName; the node's Modified event runs
      ``updateEffectsSectionFromMRML``: deactivate the previous effect, leave Place mode (``ViewTransform``), then
      activate the new one (``setActiveEffect`` / ``updateEffectsSectionFromMRML``);
    * the interaction node's Modified event goes to the active effect's ``interactionNodeModified``
      (``onInteractionNodeModified``);
    * the parameter node's EffectParameterModified event calls every effect's ``updateGUIFromMRML``;
    * Escape is the editor's shortcut that deactivates the active effect (``installKeyboardShortcuts``,
      ``onSelectEffectShortcut`` with effect index 0);
    * ``saveStateForUndo`` / ``updateVolume`` call the real ``vtkSlicerSegmentEditorLogic``.
    """

    def __init__(self, app: SlicerApplicationStandin, scene, editor_node, logic, interaction_node) -> None:
        self.app = app
        self.scene = scene
        self.node = editor_node
        self.logic = logic
        self.interaction_node = interaction_node
        self.effects: List[ScriptedEffectStandin] = []
        self._active: Optional[ScriptedEffectStandin] = None
        self._last_active: Optional[ScriptedEffectStandin] = None
        self._tags = [
            (editor_node, editor_node.AddObserver(vtk.vtkCommand.ModifiedEvent, self._on_node_modified)),
            (editor_node, editor_node.AddObserver(slicer.vtkMRMLSegmentEditorNode.EffectParameterModified,
                                                  self._on_effect_parameter_modified)),
            (interaction_node, interaction_node.AddObserver(vtk.vtkCommand.ModifiedEvent,
                                                            self._on_interaction_node_modified)),
        ]
        self.escape_shortcut = QShortcut(QKeySequence(Qt.Key_Escape), app.main_window)
        self.escape_shortcut.connect("activated()", lambda: self.setActiveEffect(None))

    def close(self) -> None:
        if self._active is not None:
            self.setActiveEffect(None)
        for effect in self.effects:
            effect.cleanup()
        for obj, tag in self._tags:
            obj.RemoveObserver(tag)
        self._tags = []

    # -- effects ---------------------------------------------------------------------------------------------
    def add_effect(self, effect: ScriptedEffectStandin) -> ScriptedEffectStandin:
        """``setupEffects`` for one effect: callbacks, parameter node and defaults, then the options frame."""
        effect._editor = self
        effect.setParameterSetNode(self.node)
        effect.setMRMLDefaults()
        self.effects.append(effect)
        effect.setupOptionsFrame()
        return effect

    def add_effect_from_source(self, path: str) -> ScriptedEffectStandin:
        effect = ScriptedEffectStandin(None)
        assert effect.setPythonSource(path), path
        return self.add_effect(effect)

    def add_effect_from_class(self, cls) -> ScriptedEffectStandin:
        effect = ScriptedEffectStandin(None)
        effect.instantiate(cls)
        return self.add_effect(effect)

    def effectByName(self, name: str) -> Optional[ScriptedEffectStandin]:
        for effect in self.effects:
            if name and effect.name == name:
                return effect
        return None

    def activeEffect(self) -> Optional[ScriptedEffectStandin]:
        return self._active

    def setActiveEffectByName(self, name: str) -> None:
        self.setActiveEffect(self.effectByName(name))

    def setActiveEffect(self, effect: Optional[ScriptedEffectStandin]) -> None:
        self.node.SetActiveEffectName(effect.name if effect is not None else "")

    def press_escape(self) -> None:
        """The user presses Esc (the Segment Editor's keyboard shortcut)."""
        self.escape_shortcut.activate()

    # -- MRML -> widget ----------------------------------------------------------------------------------
    def _on_node_modified(self, caller, event) -> None:
        self.app.invoke(self.updateEffectsSectionFromMRML, [], "SegmentEditorWidget.updateWidgetFromMRML")

    def updateEffectsSectionFromMRML(self) -> None:
        effect = self.effectByName(self.node.GetActiveEffectName() or "")
        if effect is self._active:
            return
        if self._active is not None:
            self._active.deactivate()
        if effect is not None:
            interaction = self.interaction_node
            if interaction is not None and interaction.GetCurrentInteractionMode() != interaction.ViewTransform:
                interaction.SetCurrentInteractionMode(interaction.ViewTransform)
            effect.activate()
        self._last_active, self._active = self._active, effect

    def _on_effect_parameter_modified(self, caller, event) -> None:
        for effect in list(self.effects):
            self.app.invoke(effect.updateGUIFromMRML, [], f"{effect.name}.updateGUIFromMRML")

    def _on_interaction_node_modified(self, caller, event) -> None:
        if self.interaction_node is None or self._active is None:
            return
        self.app.invoke(self._active.interactionNodeModified, [self.interaction_node],
                        "SegmentEditorWidget.onInteractionNodeModified")

    # -- slots the effects call --------------------------------------------------------------------------
    def saveStateForUndo(self) -> None:
        self.logic.SaveStateForUndo()

    def updateModifierLabelmap(self):
        if not self.logic.ResetModifierLabelmapToDefault():
            return None
        return self.logic.GetModifierLabelmap()


# ---------------------------------------------------------------------------------------------------------
# Slice views and clicks


ORIENTATIONS = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}


class _MarkupsWidget:
    """One ``vtkSlicerMarkupsWidget`` (one markups display node in one view): its preview point index."""

    def __init__(self, node) -> None:
        self.node = node
        self.preview_index = -1
        self.state = "Idle"


class _SliceViewMarkups:
    """The ``vtkMRMLMarkupsDisplayableManager`` of one slice view, for placing ROI and line markups."""

    MANAGEABLE = ("vtkMRMLMarkupsROINode", "vtkMRMLMarkupsLineNode", "vtkMRMLMarkupsFiducialNode")

    def __init__(self, views: SliceViewsStandin, slice_node) -> None:
        self.views = views
        self.slice_node = slice_node
        self.widgets: Dict[str, _MarkupsWidget] = {}
        self.last_active: Optional[_MarkupsWidget] = None
        inode = views.interaction_node
        # vtkMRMLMarkupsDisplayableManager::ProcessMRMLNodesEvents: InteractionModeChangedEvent -> Leave() every
        # widget, which removes its preview point.
        self._tag = inode.AddObserver(inode.InteractionModeChangedEvent, self._on_interaction_mode_changed)

    def close(self) -> None:
        self.views.interaction_node.RemoveObserver(self._tag)

    def _on_interaction_mode_changed(self, caller, event) -> None:
        for widget in list(self.widgets.values()):
            self.leave(widget)

    def widget(self, node) -> Optional[_MarkupsWidget]:
        if node is None or node.GetDisplayNode() is None:
            return None  # widgets exist per display node (vtkMRMLMarkupsDisplayableManagerHelper)
        widget = self.widgets.get(node.GetID())
        if widget is None or widget.node is not node:
            widget = self.widgets[node.GetID()] = _MarkupsWidget(node)
        return widget

    # vtkMRMLMarkupsDisplayableManager::GetActiveMarkupsNodeForPlacement
    def active_node_for_placement(self):
        selection = self.views.selection_node
        node = self.views.scene.GetNodeByID(selection.GetActivePlaceNodeID() or "")
        class_name = selection.GetActivePlaceNodeClassName()
        if node is None or not node.IsA("vtkMRMLMarkupsNode") or not class_name:
            return None
        if class_name not in self.MANAGEABLE or node.GetClassName() != class_name:
            return None
        return node

    # vtkMRMLMarkupsDisplayableManager::GetWidgetForPlacement
    def widget_for_placement(self) -> Optional[_MarkupsWidget]:
        inode = self.views.interaction_node
        if inode.GetCurrentInteractionMode() != inode.Place:
            return None
        class_name = self.views.selection_node.GetActivePlaceNodeClassName() or ""
        if class_name not in self.MANAGEABLE:
            return None
        node = self.active_node_for_placement()
        if node is not None:
            display = node.GetDisplayNode()
            if display is None or not display.IsDisplayableInView(self.slice_node.GetID()):
                return None
        if node is not None and node.GetMaximumNumberOfControlPoints() >= 0 \
                and node.GetNumberOfDefinedControlPoints() >= node.GetMaximumNumberOfControlPoints():
            if node.GetNumberOfDefinedControlPoints() == node.GetMaximumNumberOfControlPoints():
                existing = self.widgets.get(node.GetID())
                if existing is not None and existing.preview_index < 0:
                    node = None  # no preview is shown, so the node is complete: place a new one
            else:
                node = None
        if node is None:
            node = self.views.markups_logic.AddNewMarkupsNode(class_name)
            if node is not None:
                self.views.selection_node.SetReferenceActivePlaceNodeID(node.GetID())
                self.views.created_nodes.append(node)
        return self.widget(node)

    # vtkSlicerMarkupsWidget::UpdatePreviewPointIndex / UpdatePreviewPoint
    @staticmethod
    def _update_preview_index(widget: _MarkupsWidget) -> None:
        node = widget.node
        for n in range(node.GetNumberOfControlPoints()):
            if node.GetNthControlPointPositionStatus(n) == node.PositionPreview:
                widget.preview_index = n
                return
        widget.preview_index = -1

    def _update_preview_point(self, widget: _MarkupsWidget, world, status) -> None:
        node = widget.node
        event = slicer.vtkMRMLInteractionEventData()
        event.SetType(vtk.vtkCommand.MouseMoveEvent)
        event.SetViewNode(self.slice_node)
        # vtkMRMLSliceViewInteractorStyle: the world position is XYToRAS * display position, accurate; the event's
        # world orientation stays the default quaternion, so the widget uses the identity orientation matrix.
        event.SetWorldPosition([float(v) for v in world])
        orientation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        self._update_preview_index(widget)
        index = widget.preview_index if widget.preview_index >= 0 else node.GetControlPointPlacementStartIndex()
        widget.preview_index = node.GetMarkupsDisplayNode().UpdateActiveControlPointWorld(
            index, event, orientation, self.slice_node.GetID(), None, status)

    # vtkSlicerMarkupsWidget::ProcessMouseMove (WidgetStateDefine)
    def mouse_move(self, world) -> None:
        widget = self.widget_for_placement()
        if self.last_active is not None and self.last_active is not widget:
            self.leave(self.last_active)
        self.last_active = widget
        if widget is None:
            return
        widget.state = "Define"
        node = widget.node
        self._update_preview_index(widget)
        status = node.PositionPreview
        if widget.preview_index >= 0:
            status = node.GetNthControlPointPositionStatus(widget.preview_index)
        self._update_preview_point(widget, world, status)

    # vtkSlicerMarkupsWidget::PlacePoint (left button release in WidgetStateDefine)
    def place_point(self, world) -> bool:
        widget = self.widget_for_placement()
        if widget is None:
            return False
        node = widget.node
        node.GetScene().SaveStateForUndo()
        self._update_preview_point(widget, world, node.PositionDefined)
        index = widget.preview_index
        widget.preview_index = -1
        inode = self.views.interaction_node
        has_required = node.GetRequiredNumberOfControlPoints() > 0
        has_required_number = node.GetNumberOfControlPoints() >= node.GetRequiredNumberOfControlPoints()
        undefined = node.GetNumberOfUndefinedControlPoints() > 0
        required_reached = has_required and has_required_number and not undefined
        locked_reached = bool(node.GetFixedNumberOfControlPoints()) and not undefined
        if (required_reached and not inode.GetPlaceModePersistence()) \
                or (not has_required and not inode.GetPlaceModePersistence()) or locked_reached:
            inode.SetCurrentInteractionMode(inode.ViewTransform)  # end of one-time placement
            display = node.GetMarkupsDisplayNode()
            if display is not None:
                display.SetActiveControlPoint(index)
            widget.state = "OnWidget"
        return index >= 0

    # vtkSlicerMarkupsWidget::Leave -> RemovePreviewPoint
    def leave(self, widget: _MarkupsWidget) -> None:
        node = widget.node
        if widget.preview_index < 0 or node.GetScene() is None:
            widget.preview_index = -1
            return
        index = widget.preview_index
        if 0 <= index < node.GetNumberOfControlPoints() \
                and node.GetNthControlPointPositionStatus(index) == node.PositionPreview:
            if node.GetNthControlPointAutoCreated(index):
                node.RemoveNthControlPoint(index)
                display = node.GetMarkupsDisplayNode()
                if display is not None:
                    display.SetActiveControlPoint(-1)
            else:
                node.UnsetNthControlPointPosition(index)
        widget.preview_index = -1

    # WidgetEventStopPlace (right click in WidgetStateDefine): SwitchToViewTransformMode, then node Modified
    def stop_place(self) -> None:
        widget = self.widget_for_placement()
        self.views.interaction_node.SwitchToViewTransformMode()
        if widget is not None and widget.node.GetScene() is not None:
            widget.node.Modified()


class SliceViewsStandin:
    """Slice views Red (axial), Yellow (sagittal), Green (coronal) as real ``vtkMRMLSliceNode`` nodes, created as
    ``vtkMRMLLayoutLogic::CreateViewFromAttributes`` / ``ApplyProperty`` do (layout name, name, default orientation
    and orientation from the presets ``vtkMRMLSliceNode::AddDefaultSliceOrientationPresets`` adds), and the user's
    mouse in them."""

    def __init__(self, scene, app_logic, markups_logic, size_px: int = 512, field_of_view_mm: float = 256.0) -> None:
        self.scene = scene
        self.app_logic = app_logic
        self.markups_logic = markups_logic
        self.interaction_node = app_logic.GetInteractionNode()
        self.selection_node = app_logic.GetSelectionNode()
        self.created_nodes: List[object] = []  # markups nodes the displayable manager created itself
        default = scene.GetDefaultNodeByClass("vtkMRMLSliceNode")
        if default is None or not default.HasSliceOrientationPreset("Axial"):
            slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
        self.nodes = {}
        self.managers: Dict[str, _SliceViewMarkups] = {}
        for layout_name, orientation in ORIENTATIONS.items():
            node = scene.GetSingletonNode(layout_name, "vtkMRMLSliceNode")
            if node is None:
                node = scene.CreateNodeByClass("vtkMRMLSliceNode")
                node.SetLayoutName(layout_name)
                node.SetName(layout_name)
                node.SetDefaultOrientation(orientation)
                scene.AddNode(node)
                node.UnRegister(None)  # CreateNodeByClass hands over a reference
                node = scene.GetSingletonNode(layout_name, "vtkMRMLSliceNode")
                node.SetOrientation(orientation)
            node.SetDimensions(size_px, size_px, 1)
            node.SetFieldOfView(field_of_view_mm, field_of_view_mm, 1.0)
            node.UpdateMatrices()
            self.nodes[layout_name] = node
            self.managers[layout_name] = _SliceViewMarkups(self, node)
        self._last_view: Optional[str] = None

    def close(self) -> None:
        for manager in self.managers.values():
            manager.close()

    def slice_node(self, view: str):
        return self.nodes[view]

    def show_slice_through(self, view: str, ras) -> None:
        """The user scrolls ``view`` to the slice through ``ras`` (``vtkMRMLSliceNode::JumpSliceByOffsetting``)."""
        self.nodes[view].JumpSliceByOffsetting(*[float(v) for v in ras])

    def world_under_mouse(self, view: str, ras) -> np.ndarray:
        """Where a click on ``ras`` lands: the nearest whole display pixel, mapped back by the slice node's XYToRAS
        (vtkMRMLSliceViewInteractorStyle::DelegateInteractionEventToDisplayableManagers), so on the view's plane."""
        matrix = self.nodes[view].GetXYToRAS()
        xy_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
        xy = np.linalg.inv(xy_to_ras) @ np.r_[np.asarray(ras, dtype=float), 1.0]
        display = np.array([round(xy[0]), round(xy[1]), 0.0, 1.0])
        return (xy_to_ras @ display)[:3]

    def _enter(self, view: str) -> _SliceViewMarkups:
        if self._last_view is not None and self._last_view != view:
            previous = self.managers[self._last_view]  # the mouse left that view: LeaveEvent
            if previous.last_active is not None:
                previous.leave(previous.last_active)
                previous.last_active = None
        self._last_view = view
        return self.managers[view]

    def move(self, view: str, ras) -> np.ndarray:
        """The mouse moves over ``ras`` in ``view`` (shown at that slice); returns the world position under it."""
        self.show_slice_through(view, ras)
        world = self.world_under_mouse(view, ras)
        self._enter(view).mouse_move(world)
        return world

    def click(self, view: str, ras) -> np.ndarray:
        """A left click on ``ras`` in ``view``: mouse move there, then the button release that places a point."""
        world = self.move(view, ras)
        self.managers[view].place_point(world)
        return world

    def right_click(self, view: str, ras) -> None:
        """A right click in Place mode stops placing (vtkSlicerMarkupsWidget WidgetEventStopPlace)."""
        self.move(view, ras)
        self.managers[view].stop_place()


# ---------------------------------------------------------------------------------------------------------
# slicer.ScriptedLoadableModule, for the real MedSAMSegment.py


def make_scripted_loadable_module() -> types.ModuleType:
    """The classes MedSAMSegment.py derives from (Base/Python/slicer/ScriptedLoadableModule.py), reduced to what
    the module file and its logic use."""
    import unittest

    module = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent) -> None:
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None) -> None:
            self.parent = parent

        def setup(self) -> None:
            pass

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None) -> None:
            self.moduleName = self.__class__.__name__
            if self.moduleName.endswith("Logic"):
                self.moduleName = self.moduleName[:-5]
            self.isSingletonParameterNode = True

        def getParameterNode(self):
            """The module's singleton vtkMRMLScriptedModuleNode, created when missing (ModuleName attribute)."""
            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node is None:
                node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
                node.UnRegister(None)
                node.SetSingletonTag(self.moduleName)
                node.SetAttribute("ModuleName", self.moduleName)
                node = slicer.mrmlScene.AddNode(node)
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=1000) -> None:
            pass

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        cls.__module__ = module.__name__
        setattr(module, cls.__name__, cls)
    return module


def make_parameter_node_wrapper_module() -> types.ModuleType:
    """``slicer.parameterNodeWrapper.parameterNodeWrapper`` (Base/Python/slicer/parameterNodeWrapper/wrapper.py),
    reduced to the types MedSAMSegment.py declares: a class whose annotated members become properties stored in the
    wrapped vtkMRMLScriptedModuleNode, MRML node types as node references, ``str`` / ``int`` / ``float`` / ``bool``
    as parameters, with the class default when unset."""
    module = types.ModuleType("slicer.parameterNodeWrapper")

    def parameterNodeWrapper(cls):
        annotations = dict(getattr(cls, "__annotations__", {}))
        defaults = {name: cls.__dict__.get(name) for name in annotations}

        def make_property(name, kind):
            is_node = isinstance(kind, type) and issubclass(kind, vtk.vtkObject)

            def getter(self):
                if is_node:
                    return self.parameterNode.GetNodeReference(name)
                value = self.parameterNode.GetParameter(name)
                if name not in self.parameterNode.GetParameterNames() and defaults[name] is not None:
                    return defaults[name]
                if kind is bool:
                    return value == "True"
                return kind(value) if kind in (int, float) else value

            def setter(self, value):
                if is_node:
                    self.parameterNode.SetNodeReferenceID(name, value.GetID() if value is not None else None)
                else:
                    self.parameterNode.SetParameter(name, str(value))

            return property(getter, setter)

        members = {name: make_property(name, kind) for name, kind in annotations.items()}

        def __init__(self, parameterNode):
            self.parameterNode = parameterNode
            for name, value in defaults.items():
                kind = annotations[name]
                if value is not None and not (isinstance(kind, type) and issubclass(kind, vtk.vtkObject)) \
                        and name not in parameterNode.GetParameterNames():
                    parameterNode.SetParameter(name, str(value))

        members["__init__"] = __init__
        members["__doc__"] = cls.__doc__
        members["__module__"] = cls.__module__
        return type(cls.__name__, (), members)

    module.parameterNodeWrapper = parameterNodeWrapper
    return module


# ---------------------------------------------------------------------------------------------------------
# Installing it


@dataclass
class SlicerStandin:
    """Everything :func:`install` made; tests act through it."""

    app: SlicerApplicationStandin
    views: SliceViewsStandin
    markups: MarkupsLogicStandin
    interaction_node: object
    selection_node: object
    editors: List[SegmentEditorWidgetStandin] = field(default_factory=list)

    @property
    def loop(self) -> EventLoop:
        return self.app.loop

    def segment_editor(self, editor_node, editor_logic) -> SegmentEditorWidgetStandin:
        editor = SegmentEditorWidgetStandin(self.app, editor_node.GetScene(), editor_node, editor_logic,
                                            self.interaction_node)
        self.editors.append(editor)
        return editor

    def close(self) -> None:
        for editor in self.editors:
            editor.close()
        self.views.close()
        for timer in list(self.app.loop.timers):
            timer.stop()


def install(monkeypatch, built_scene) -> SlicerStandin:
    """Put the stand-in modules into ``sys.modules`` and attach ``slicer.app`` etc. for one test.

    ``built_scene`` is ``slicer_scene.SlicerScene`` (the ``mrml_scene`` fixture). Adds the interaction node singleton
    (the selection node is already there) and the three slice views. Everything is undone by ``monkeypatch``
    (call :meth:`SlicerStandin.close` first to remove observers and stop timers).
    """
    scene = built_scene.scene
    app_logic = built_scene.app_logic
    if app_logic.GetInteractionNode() is None:
        interaction = slicer.vtkMRMLInteractionNode()
        interaction.SetSingletonTag("Singleton")  # ID vtkMRMLInteractionNodeSingleton, as in the application
        scene.AddNode(interaction)
    interaction_node = app_logic.GetInteractionNode()
    selection_node = app_logic.GetSelectionNode()
    assert interaction_node is not None and selection_node is not None

    app = SlicerApplicationStandin(app_logic)
    monkeypatch.setattr(APP, "app", app)
    monkeypatch.setitem(sys.modules, "qt", make_qt_module())
    monkeypatch.setitem(sys.modules, "ctk", make_ctk_module())
    effects_module = types.ModuleType("qSlicerSegmentationsEditorEffectsPythonQt")
    effects_module.qSlicerSegmentEditorScriptedEffect = ScriptedEffectStandin
    effects_module.qSlicerSegmentEditorEffectFactory = EffectFactoryStandin
    monkeypatch.setitem(sys.modules, "qSlicerSegmentationsEditorEffectsPythonQt", effects_module)
    segment_editor_effects = types.ModuleType("SegmentEditorEffects")
    segment_editor_effects.AbstractScriptedSegmentEditorEffect = AbstractScriptedSegmentEditorEffect
    monkeypatch.setitem(sys.modules, "SegmentEditorEffects", segment_editor_effects)
    loadable = make_scripted_loadable_module()
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", loadable)
    monkeypatch.setattr(slicer, "ScriptedLoadableModule", loadable, raising=False)
    wrapper = make_parameter_node_wrapper_module()
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", wrapper)
    monkeypatch.setattr(slicer, "parameterNodeWrapper", wrapper, raising=False)
    # Modules loaded under the stand-in are loaded afresh for each test and dropped after it (they hold the
    # stand-in's qt): setitem records the entry's absence, so the undo deletes what the test loaded.
    for name in ("MedSAMSegment", "SegmentEditorMedSAMLib", "SegmentEditorMedSAMLib.SegmentEditorEffect"):
        monkeypatch.setitem(sys.modules, name, None)
        del sys.modules[name]
    monkeypatch.setattr(slicer, "SegmentEditorMedSAMLib", None, raising=False)

    markups = MarkupsLogicStandin(built_scene.markups_logic)
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(markups=types.SimpleNamespace(logic=lambda: markups)),
                        raising=False)
    abstract_effect = types.SimpleNamespace(**{name: n for n, name in enumerate(MODIFICATION_MODES)})
    monkeypatch.setattr(slicer, "qSlicerSegmentEditorAbstractEffect", abstract_effect, raising=False)
    monkeypatch.setattr(slicer, "qSlicerSegmentEditorEffectFactory", EffectFactoryStandin, raising=False)
    monkeypatch.setattr(EffectFactoryStandin, "_instance", None)

    views = SliceViewsStandin(scene, app_logic, built_scene.markups_logic)
    return SlicerStandin(app, views, markups, interaction_node, selection_node)


__all__ = ["install", "SlicerStandin", "EventLoop", "Tick", "SegmentEditorWidgetStandin", "ScriptedEffectStandin",
           "SliceViewsStandin", "AbstractScriptedSegmentEditorEffect", "Dialog", "SlotError"]
