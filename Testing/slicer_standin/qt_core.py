"""The non-widget parts of PythonQt's ``qt`` module: PythonQt-style signals (``QObject``), Qt's enums, timers,
shortcuts, icons, cursors and ``QApplication``."""

from __future__ import annotations

import inspect
import os
import time
from typing import Callable, Optional, Tuple

from .event_loop import APP, _loop

#: The names the qt module stand-in takes from this file.
__all__ = ["Qt", "QObject", "QKeySequence", "QShortcut", "QIcon", "QCursor", "QTimer", "QFile", "QSettings",
           "QApplication"]

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


def _signal_types(signature: str) -> Optional[str]:
    """``"currentNodeChanged(vtkMRMLNode*)"`` -> ``"vtkMRMLNode*"`` (spaces removed); None without parentheses."""
    if "(" not in signature:
        return None
    return signature.split("(", 1)[1].rsplit(")", 1)[0].replace(" ", "")


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


def qt_setter(name: str, convert: Optional[Callable] = None):
    """``setName(value)`` for a Qt property the stand-in keeps as the attribute ``name`` (PythonQt offers both the
    property and its setter; assigning through ``setattr`` runs a Python property's setter where there is one)."""

    def setter(self, value) -> None:
        setattr(self, name, value if convert is None else convert(value))

    setter.__name__ = f"set{name[:1].upper()}{name[1:]}"
    return setter


def notifying_text_property(signal: str):
    """A QString property that emits ``signal(QString)`` when its value changes, also when set by a program
    (``QLineEdit::text`` / ``textChanged``, ``ctkPathLineEdit::currentPath`` / ``currentPathChanged``)."""
    key = f"_{signal}_value"

    def getter(self) -> str:
        return self.__dict__.get(key, "")

    def setter(self, value) -> None:
        value = "" if value is None else str(value)
        if value == getter(self):
            return
        self.__dict__[key] = value
        self._emit(signal, value)

    return property(getter, setter)


class QObject:
    """Signals and slots the PythonQt way: ``connect("name(types)", callable)``; ``blockSignals``; the parent and
    children (qtbase src/corelib/kernel/qobject.cpp) that ``slicer.util.findChildren`` walks; ``name``, which
    PythonQt maps to ``objectName`` for a class without a ``name`` property of its own (PythonQt
    src/PythonQtClassInfo.cpp, ``lookForPropertyAndCache``); ``property`` / ``setProperty`` with dynamic properties
    for names the class has no attribute for (QObject::setProperty)."""

    def __init__(self, parent=None) -> None:
        self.__dict__["_connections"] = {}
        self.__dict__["_blocked"] = False
        self.__dict__["_children"] = []
        self.__dict__["_dynamic"] = {}
        self.objectName = ""
        self._parent = None
        self.setParent(parent)

    @property
    def name(self) -> str:
        return self.objectName

    @name.setter
    def name(self, value) -> None:
        self.objectName = value

    def connect(self, signature: str, slot) -> bool:
        name, count = _signal_name(signature)
        self._connections.setdefault(name, []).append((count, slot, _signal_types(signature)))
        return True

    def disconnect(self, signature: str, slot=None) -> bool:
        name, _ = _signal_name(signature)
        kept = [c for c in self._connections.get(name, []) if slot is not None and c[1] != slot]
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
        if self._parent is not None:
            self._parent._children.remove(self)
        self._parent = parent if isinstance(parent, QObject) else None
        if self._parent is not None:
            self._parent._children.append(self)

    def children(self) -> list:
        return list(self._children)

    def isWidgetType(self) -> bool:
        return False

    def property(self, name: str):
        return getattr(self, name) if hasattr(self, name) else self._dynamic.get(name)

    def setProperty(self, name: str, value) -> bool:
        """False for a dynamic property, as Qt returns (a name the class has no property for)."""
        if hasattr(self, name):
            setattr(self, name, value)
            return True
        self._dynamic[name] = value
        return False

    def _emit(self, name: str, *args, overload: Optional[str] = None) -> None:
        """Qt emits to each connection in order; a blocked object emits nothing (QObject::blockSignals).
        ``overload``: the argument types of this overload of the signal (``"bool"`` of ``currentNodeChanged(bool)``),
        which only connections made with that signature or with none receive."""
        if self._blocked:
            return
        for count, slot, types in list(self._connections.get(name, [])):
            if overload is not None and types is not None and types != overload:
                continue
            passed = list(args) if count < 0 else list(args[:count])
            accepted = _accepted_argument_count(slot)
            if accepted is not None:
                passed = passed[:accepted]
            APP.invoke(slot, passed, f"{type(self).__name__}.{name}")


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

    setContext = qt_setter("context")

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

    setInterval = qt_setter("interval", int)

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


class QFile:
    """Enough of QFile for ``slicer.util.loadUI``: ``exists()``, ``open(QFile.ReadOnly)``, ``fileName()``."""

    ReadOnly, WriteOnly, ReadWrite, Text = 0x1, 0x2, 0x3, 0x10

    def __init__(self, path="") -> None:
        self._path = str(path)
        self.openMode = 0

    def fileName(self) -> str:
        return self._path

    def exists(self) -> bool:
        return os.path.isfile(self._path)

    def open(self, mode) -> bool:
        if not self.exists():
            return False
        self.openMode = int(mode)
        return True

    def close(self) -> None:
        self.openMode = 0


class QSettings:
    """The application's settings, kept in memory for one test (``SlicerApplicationStandin.settings_values``)."""

    def __init__(self, *unused) -> None:
        self._values = APP.app.settings_values

    def value(self, key, default=None):
        return self._values.get(key, default)

    def setValue(self, key, value) -> None:
        self._values[key] = value

    def contains(self, key) -> bool:
        return key in self._values

    def remove(self, key) -> None:
        self._values.pop(key, None)


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
