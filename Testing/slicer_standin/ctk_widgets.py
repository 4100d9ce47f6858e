"""Stand-in for CTK's Python module (``ctk``): the widgets the effect and the module page use."""

from __future__ import annotations

import types
from typing import List

from .qt_core import notifying_text_property, qt_setter
from .qt_widgets import QAbstractButton, QMessageBox, QWidget

#: The names the ctk module stand-in holds.
__all__ = ["ctkPathLineEdit", "ctkMessageBox", "ctkCollapsibleButton"]


class ctkPathLineEdit(QWidget):
    """``currentPath`` emits ``currentPathChanged(QString)`` on a change (CTK Libs/Widgets/ctkPathLineEdit.cpp);
    filter flags from ctkPathLineEdit.h."""

    Dirs, Files, Drives, NoSymLinks, AllEntries = 0x001, 0x002, 0x004, 0x008, 0x007
    Readable, Writable, Executable = 0x010, 0x020, 0x040

    currentPath = notifying_text_property("currentPathChanged")

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.filters = ctkPathLineEdit.AllEntries
        self.nameFilters: List[str] = []

    setCurrentPath = qt_setter("currentPath")


class ctkCollapsibleButton(QAbstractButton):
    """A checkable button, checked (expanded) at first; ``collapsed`` is the opposite of ``checked``
    (CTK Libs/Widgets/ctkCollapsibleButton.cpp)."""

    def __init__(self, text="", parent=None) -> None:
        super().__init__(text, parent)
        self.checkable = True
        self.checked = True

    @property
    def collapsed(self) -> bool:
        return not self.checked

    @collapsed.setter
    def collapsed(self, value) -> None:
        self.checked = not value

    setCollapsed = qt_setter("collapsed", bool)


class ctkMessageBox(QMessageBox):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.dontShowAgainSettingsKey = ""
        self.dontShowAgainVisible = False


def make_ctk_module() -> types.ModuleType:
    module = types.ModuleType("ctk")
    module.__doc__ = "Stand-in for CTK's Python module (Testing/slicer_standin)."
    for name in __all__:
        setattr(module, name, globals()[name])
    return module
