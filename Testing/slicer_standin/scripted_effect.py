"""The scripted Segment Editor effect: the Python base class the effect derives from, the effect factory, and the
C++ adaptor ``qSlicerSegmentEditorScriptedEffect`` that owns the Python effect object."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from .event_loop import APP
from .qt_core import QIcon, QObject
from .scripted_module import load_source_as_module

if TYPE_CHECKING:
    from .segment_editor import SegmentEditorWidgetStandin

slicer = __import__("slicer")
vtk = __import__("vtk")

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

    #: qSlicerSegmentEditorAbstractEffect's own ``name`` property (not PythonQt's alias of ``objectName``).
    name = "UnnamedScriptedEffect"

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
        cls = getattr(load_source_as_module(module_name, path, class_name), class_name)
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
        return APP.invoke(method, list(args), f"{self.name}.{name}", _MISSING)

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

    def _numberParameter(self, name: str, kind):
        """``QString::toInt`` / ``toDouble`` of the parameter: 0 when it is not a number."""
        try:
            return kind(self.parameter(name))
        except ValueError:
            return kind(0)

    def integerParameter(self, name: str) -> int:
        return self._numberParameter(name, int)

    def doubleParameter(self, name: str) -> float:
        return self._numberParameter(name, float)

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
