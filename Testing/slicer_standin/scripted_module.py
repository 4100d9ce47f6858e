"""Scripted modules: ``slicer.ScriptedLoadableModule`` (the Python base classes a module file derives from) and the
C++ side that loads a module file and shows its widget (``qSlicerScriptedLoadableModule`` and
``qSlicerScriptedLoadableModuleWidget``)."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from typing import Optional

from .event_loop import APP
from .qt_widgets import QVBoxLayout, QWidget

slicer = __import__("slicer")

_MISSING = object()


def load_source_as_module(module_name: str, path: str, attribute: str) -> types.ModuleType:
    """The module ``module_name`` from the file ``path``, kept in ``sys.modules``; loaded unless a module of that
    name with ``attribute`` (the class to instantiate) is there already (Base/QTCore/qSlicerScriptedUtils.cxx
    ``loadSourceAsModule``)."""
    module = sys.modules.get(module_name)
    if module is None or not hasattr(module, attribute):
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return module


def make_scripted_loadable_module() -> types.ModuleType:
    """The classes a module file derives from, copied from Base/Python/slicer/ScriptedLoadableModule.py without the
    developer section's Reload / Test / Edit buttons (shown only in developer mode, which the stand-in's settings
    leave off)."""
    import importlib
    import unittest

    module = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent) -> None:
            super().__init__()
            self.parent = parent
            self.moduleName = self.__class__.__name__
            parent.title = ""
            parent.categories = []
            parent.dependencies = []
            parent.contributors = ["Andras Lasso (PerkLab, Queen's University), Steve Pieper (Isomics)"]
            parent.helpText = ""
            parent.acknowledgementText = ""
            moduleDir = os.path.dirname(self.parent.path)
            for iconExtension in [".svg", ".png"]:
                iconPath = os.path.join(moduleDir, "Resources/Icons", self.moduleName + iconExtension)
                if os.path.isfile(iconPath):
                    parent.icon = sys.modules["qt"].QIcon(iconPath)
                    break
            if not hasattr(slicer, "selfTests"):
                slicer.selfTests = {}
            slicer.selfTests[self.moduleName] = self.runTest

        def resourcePath(self, filename):
            return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)

        def runTest(self, msec=100, **kwargs):
            pythonModule = importlib.import_module(self.__module__)
            className = self.moduleName + "Test"
            try:
                TestCaseClass = getattr(pythonModule, className)
            except AttributeError:
                raise AssertionError(f"Test case class not found: {self.__module__}.{className} ") from None
            testCase = TestCaseClass()
            testCase.messageDelay = msec
            testCase.runTest(**kwargs)

    def moduleNameOf(obj, suffix: str) -> str:
        """The class name without ``suffix`` ("Widget", "Logic"), as each class of the file computes it."""
        name = obj.__class__.__name__
        return name[: -len(suffix)] if name.endswith(suffix) else name

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None) -> None:
            super().__init__()
            self.moduleName = moduleNameOf(self, "Widget")
            self.developerMode = slicer.util.settingsValue("Developer/DeveloperMode", False,
                                                           converter=slicer.util.toBool)
            if not parent:
                self.parent = slicer.qMRMLWidget()
                self.parent.setLayout(sys.modules["qt"].QVBoxLayout())
                self.parent.setMRMLScene(slicer.mrmlScene)
            else:
                self.parent = parent
            self.layout = self.parent.layout()
            if not parent:
                self.setup()
                self.parent.show()
            slicer.app.moduleManager().connect("moduleAboutToBeUnloaded(QString)", self._onModuleAboutToBeUnloaded)

        def resourcePath(self, filename):
            scriptedModulesPath = os.path.dirname(slicer.util.modulePath(self.moduleName))
            return os.path.join(scriptedModulesPath, "Resources", filename)

        def cleanup(self):
            pass

        def _onModuleAboutToBeUnloaded(self, moduleName):
            if moduleName == self.moduleName:
                self.cleanup()
                slicer.app.moduleManager().disconnect("moduleAboutToBeUnloaded(QString)",
                                                      self._onModuleAboutToBeUnloaded)

        def setupDeveloperSection(self):
            if not self.developerMode:
                return
            raise NotImplementedError("the Slicer stand-in has no developer section (Reload and Test)")

        def setup(self):
            self.setupDeveloperSection()

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None) -> None:
            super().__init__()
            self.moduleName = moduleNameOf(self, "Logic")
            self.isSingletonParameterNode = True

        def getParameterNode(self):
            if self.isSingletonParameterNode:
                parameterNode = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
                if parameterNode:
                    # After close scene, ModuleName attribute may be removed, restore it now
                    if parameterNode.GetAttribute("ModuleName") != self.moduleName:
                        parameterNode.SetAttribute("ModuleName", self.moduleName)
                    return parameterNode
            else:
                for nodeIndex in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):
                    parameterNode = slicer.mrmlScene.GetNthNodeByClass(nodeIndex, "vtkMRMLScriptedModuleNode")
                    if parameterNode.GetAttribute("ModuleName") == self.moduleName:
                        return parameterNode
            return slicer.mrmlScene.AddNode(self.createParameterNode())

        def createParameterNode(self):
            if slicer.mrmlScene is None:
                return None
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)  # object is owned by the Python variable now
            if self.isSingletonParameterNode:
                node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            super(unittest.TestCase, self).__init__()
            self.enableScreenshots = False
            self.screenshotScaleFactor = 1.0

        def delayDisplay(self, message, requestedDelay=None, msec=None) -> None:
            if hasattr(self, "messageDelay"):
                msec = self.messageDelay
            if msec is None:
                msec = requestedDelay
            if msec is None:
                msec = 100
            slicer.util.delayDisplay(message, msec)

        def runTest(self):
            import logging

            logging.warning("No test is defined in " + self.__class__.__name__)

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        cls.__module__ = module.__name__
        cls.__qualname__ = cls.__name__
        setattr(module, cls.__name__, cls)
    return module


class ScriptedModuleWidgetStandin(QWidget):
    """``qSlicerScriptedLoadableModuleWidget`` (Base/QTGUI/qSlicerScriptedLoadableModuleWidget.cxx): a widget with
    a vertical layout that instantiates ``<Name>Widget(self)`` from the module file, kept as
    ``slicer.modules.<Name>Widget``; ``setup()`` sets the window title (qSlicerAbstractModuleWidget::setup), then
    calls the Python ``setup``; ``enter()`` / ``exit()`` set ``isEntered`` (qSlicerAbstractModuleWidget.cxx), then
    call the Python method. A Python method that raises is printed (PythonQt::handleError) and recorded in
    ``slicer.app.slot_errors``."""

    def __init__(self, module: ScriptedModuleStandin) -> None:
        super().__init__()
        QVBoxLayout(self)
        self.module = module
        self._entered = False
        self.objectName = f"{module.name}Widget"
        cls = getattr(sys.modules[module.name], f"{module.name}Widget")
        self._self = cls(self)
        setattr(slicer.modules, f"{module.name}Widget", self._self)

    def self(self):
        return self._self

    @property
    def isEntered(self) -> bool:
        return self._entered

    def _call(self, name: str):
        method = getattr(self._self, name, None)
        if method is None:
            return _MISSING
        return APP.invoke(method, [], f"{self.module.name}Widget.{name}", _MISSING)

    def setup(self) -> None:
        self.windowTitle = self.module.title
        self._call("setup")

    def enter(self) -> None:
        if self._entered:
            APP.app.critical("enter: isEntered is already true!")
            return
        self._entered = True
        self._call("enter")

    def exit(self) -> None:
        if not self._entered:
            APP.app.critical("exit: isEntered is already false!")
            return
        self._entered = False
        self._call("exit")


class ScriptedModuleStandin:
    """``qSlicerScriptedLoadableModule`` (Base/QTGUI/qSlicerScriptedLoadableModule.cxx): loads the module file as
    the Python module named after the file and instantiates the class of that name with itself as ``parent``
    (which sets ``title``, ``categories``, ... on it), kept as ``slicer.modules.<Name>Instance``; the module
    itself is ``slicer.modules.<name in lower case>`` (``slicer.util.modulePath`` reads its ``path``). Its widget
    is made, and set up, on first use (qSlicerAbstractCoreModule::widgetRepresentation,
    qSlicerAbstractModuleRepresentation::setModule)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = os.path.splitext(os.path.basename(path))[0]
        self.title = self.name
        self.categories, self.dependencies, self.contributors = [], [], []
        self.helpText = self.acknowledgementText = ""
        self.icon = None
        self.widget: Optional[ScriptedModuleWidgetStandin] = None
        python_module = load_source_as_module(self.name, path, self.name)
        self._self = getattr(python_module, self.name)(self)
        setattr(slicer.modules, f"{self.name}Instance", self._self)
        setattr(slicer.modules, self.name.lower(), self)

    def self(self):
        return self._self

    def widgetRepresentation(self) -> ScriptedModuleWidgetStandin:
        if self.widget is None:
            self.widget = ScriptedModuleWidgetStandin(self)
            self.widget.setup()
        return self.widget


def load_module(path: str) -> ScriptedModuleStandin:
    """The module manager loads a scripted module (``slicer.app.loaded_modules``)."""
    module = ScriptedModuleStandin(path)
    APP.app.loaded_modules[module.name] = module
    return module
