"""``slicer.app`` (:class:`SlicerApplicationStandin`): the real application logic, the event loop, dialogs, cursors
and the log of slot errors; the main window that ``slicer.util.mainWindow()`` finds; ``slicer.modules.markups``."""

from __future__ import annotations

import sys
import time
import traceback
import types
from dataclasses import dataclass
from typing import Dict, List, Tuple

from .event_loop import EventLoop
from .qt_core import QCursor, QObject
from .qt_widgets import QWidget


class ModuleSelectorStandin:
    """The module panel behind ``slicer.util.selectModule``: selecting a module exits the current module's widget,
    then enters the new one, creating its widget (and running its ``setup()``) on first use (Base/QTGUI/
    qSlicerModulePanel.cxx ``setModule``, qSlicerAbstractCoreModule.cxx ``widgetRepresentation``). A module the
    stand-in has not loaded (e.g. "SegmentEditor") is only recorded as selected."""

    def __init__(self, app: SlicerApplicationStandin) -> None:
        self.app = app
        self.selectedModule = ""
        self.history: List[str] = []

    def selectModule(self, name: str) -> None:
        if name == self.selectedModule:
            return
        previous = self.app.loaded_modules.get(self.selectedModule)
        if previous is not None and previous.widget is not None:
            previous.widget.exit()
        self.selectedModule = name
        self.history.append(name)
        module = self.app.loaded_modules.get(name)
        if module is not None:
            module.widgetRepresentation().enter()


class MainWindowStandin(QWidget):
    """Found by ``slicer.util.mainWindow()`` through ``slicer.app.topLevelWidgets()`` and its objectName."""

    def __init__(self, app: SlicerApplicationStandin) -> None:
        super().__init__()
        self.objectName = "qSlicerMainWindow"
        self.status_messages: List[Tuple[str, int]] = []
        self._status = types.SimpleNamespace(showMessage=lambda m, d=0: self.status_messages.append((m, d)))
        self._module_selector = ModuleSelectorStandin(app)

    def statusBar(self):
        return self._status

    def moduleSelector(self) -> ModuleSelectorStandin:
        return self._module_selector


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
        self.main_window = MainWindowStandin(self)
        self.slot_seconds: List[Tuple[str, float]] = []  # every slot call: (what, seconds)
        self.critical_messages: List[str] = []
        self.warning_messages: List[str] = []
        self.settings_values: Dict[str, object] = {}  # what qt.QSettings holds
        self.loaded_modules: Dict[str, object] = {}  # scripted modules by name (scripted_module.load_module)
        self.module_manager = QObject()  # emits moduleAboutToBeUnloaded(QString)

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

    def moduleManager(self) -> QObject:
        return self.module_manager

    def userSettings(self):
        from .qt_core import QSettings

        return QSettings()

    settings = userSettings

    def startup_completed(self) -> None:
        """The application has loaded its modules and shown its main window (``startupCompleted()``)."""
        self._emit("startupCompleted")

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

    def warning(self, message: str) -> None:
        """A qWarning() message of Qt or Slicer C++ code."""
        self.warning_messages.append(message)
        print(f"[WARNING] {message}", file=sys.stderr)

    def record_dialog(self, box: QWidget) -> None:
        self.dialogs.append(Dialog(getattr(box, "windowTitle", ""), getattr(box, "text", ""),
                                   getattr(box, "icon", 0), getattr(box, "detailedText", "")))

    def invoke(self, slot, args, what: str, failed=None):
        """Call a slot as PythonQt does: an exception is printed and swallowed (PythonQt::handleError), here also
        recorded in :attr:`slot_errors`; then ``failed`` is returned (a C++ caller of a Python method sees null:
        qSlicerPythonCppAPI::callMethod)."""
        started = time.monotonic()
        try:
            return slot(*args)
        except Exception as exc:  # noqa: BLE001 - what PythonQt does with a slot's exception
            text = traceback.format_exc()
            self.slot_errors.append(SlotError(what, exc, text))
            print(f"[slot {what}] {text}", file=sys.stderr)
            return failed
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
