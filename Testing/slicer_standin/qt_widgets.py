"""Widgets of PythonQt's ``qt`` module as plain objects with Qt-property-style attributes: ``QWidget``, layouts,
labels, buttons, progress bar, combo box and the message boxes. Test helpers act as the user does (``click()``,
``select()``)."""

from __future__ import annotations

from typing import List, Tuple

from .event_loop import APP
from .qt_core import QObject, notifying_text_property, qt_setter

#: The names the qt module stand-in takes from this file.
__all__ = ["QWidget", "QHBoxLayout", "QVBoxLayout", "QFormLayout", "QGridLayout", "QLabel", "QLineEdit",
           "QAbstractButton", "QPushButton", "QToolButton", "QCheckBox", "QProgressBar", "QComboBox", "QMessageBox",
           "QDialog"]


class QWidget(QObject):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.enabled = True
        self.visible = True
        self.toolTip = ""
        self.windowTitle = ""
        self.layout_ = None

    setEnabled = qt_setter("enabled", bool)

    def isEnabled(self) -> bool:
        return self.enabled

    setVisible = qt_setter("visible", bool)

    def isVisible(self) -> bool:
        return self.visible

    def show(self) -> None:
        self.visible = True

    def hide(self) -> None:
        self.visible = False

    def close(self) -> bool:
        self.visible = False
        return True

    setToolTip = qt_setter("toolTip")
    setWindowTitle = qt_setter("windowTitle")

    def isWidgetType(self) -> bool:
        return True

    def setLayout(self, layout) -> None:
        """QWidget::setLayout: the layout and the widgets in it become this widget's children."""
        self.layout_ = layout
        layout.setParent(self)
        layout._reparent_widgets(self)

    def layout(self):
        return self.layout_


class _Layout(QObject):
    """QLayout: a widget added to a layout that is on a widget becomes that widget's child; a layout added to a
    layout becomes its child (qtbase src/widgets/kernel/qlayout.cpp, ``addChildWidget`` / ``addChildLayout``)."""

    def __init__(self, parent=None) -> None:
        super().__init__(None)
        self.items: List[object] = []
        if isinstance(parent, QWidget):
            parent.setLayout(self)

    def parentWidget(self):
        parent = self.parent()
        while isinstance(parent, _Layout):
            parent = parent.parent()
        return parent

    def _reparent_widgets(self, widget) -> None:
        for item in self.items:
            if isinstance(item, QWidget):
                item.setParent(widget)
            elif isinstance(item, _Layout):
                item._reparent_widgets(widget)

    def _add(self, item) -> None:
        self.items.append(item)
        if isinstance(item, _Layout):
            item.setParent(self)
        widget = self.parentWidget()
        if widget is not None:
            if isinstance(item, QWidget):
                item.setParent(widget)
            elif isinstance(item, _Layout):
                item._reparent_widgets(widget)

    def addWidget(self, widget, *unused) -> None:
        self._add(widget)

    def addLayout(self, layout, *unused) -> None:
        self._add(layout)

    def addItem(self, item) -> None:
        self.items.append(item)

    def addRow(self, *items) -> None:
        for item in items:
            self._add(item)

    def count(self) -> int:
        return len(self.items)


class QHBoxLayout(_Layout):
    pass


class QVBoxLayout(_Layout):
    pass


class QFormLayout(_Layout):
    pass


class QGridLayout(_Layout):
    pass


class QLabel(QWidget):
    def __init__(self, text="", parent=None) -> None:
        super().__init__(parent)
        self.text = text
        self.wordWrap = False

    setText = qt_setter("text")


class QLineEdit(QWidget):
    """``text`` emits ``textChanged(QString)`` on every change, also a programmatic one; ``textEdited(QString)``
    only for the user's typing (qtbase src/widgets/widgets/qlineedit.cpp, qwidgetlinecontrol.cpp ``finishChange``)."""

    text = notifying_text_property("textChanged")
    #: QLineEdit::EchoMode (qlineedit.h).
    Normal, NoEcho, Password, PasswordEchoOnEdit = 0, 1, 2, 3

    def __init__(self, text="", parent=None) -> None:
        super().__init__(parent)
        self.placeholderText = ""
        self.readOnly = False
        self.echoMode = QLineEdit.Normal
        self.text = text

    setText = qt_setter("text")

    def type_text(self, text: str) -> None:
        """Test helper: the user replaces the text by typing ``text``."""
        if not self.enabled or self.readOnly:
            return
        self.text = text
        self._emit("textEdited", self.text)

    def finish_editing(self) -> None:
        """Test helper: the user presses Return or leaves the field (``editingFinished()``)."""
        self._emit("editingFinished")


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

    setChecked = qt_setter("checked")

    def isChecked(self) -> bool:
        return self.checked

    setText = qt_setter("text")

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

    setValue = qt_setter("value")
    setMaximum = qt_setter("maximum")
    setFormat = qt_setter("format")


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

    setText = qt_setter("text")
    setStandardButtons = qt_setter("standardButtons")
    setIcon = qt_setter("icon")
    setDetailedText = qt_setter("detailedText")

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
