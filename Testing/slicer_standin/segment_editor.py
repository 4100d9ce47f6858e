"""The Segment Editor widget (``qMRMLSegmentEditorWidget``) as far as effects see it."""

from __future__ import annotations

from typing import List, Optional

from .application import SlicerApplicationStandin
from .qt_core import QKeySequence, QShortcut, Qt
from .scripted_effect import ScriptedEffectStandin

slicer = __import__("slicer")
vtk = __import__("vtk")


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
    * ``saveStateForUndo`` / ``updateVolume`` call the real ``vtkSlicerSegmentEditorLogic``;
    * closing the scene, with the Segment Editor module's widget around it (Modules/Scripted/SegmentEditor/
      SegmentEditor.py): the parameter node is the scene's singleton "SegmentEditor" node, so ``vtkMRMLScene::Clear``
      keeps it and resets it (``vtkMRMLNode::Reset``: no segmentation, volume, segment or active effect, no effect
      parameters); on StartCloseEvent the module calls ``setSegmentationNode(None)``, which deactivates the active
      effect (``qMRMLSegmentEditorWidget::setSegmentationNode``); on EndCloseEvent the widget gives every effect the
      parameter node again with its defaults (``onMRMLSceneEndCloseEvent`` -> ``initializeParameterSetNode``).
    """

    SINGLETON_TAG = "SegmentEditor"

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
        if scene.GetSingletonNode(self.SINGLETON_TAG, "vtkMRMLSegmentEditorNode") is None:
            editor_node.SetSingletonTag(self.SINGLETON_TAG)  # the module's parameter node (selectParameterNode)
        self._tags += [
            (scene, scene.AddObserver(scene.StartCloseEvent, self._on_scene_start_close)),
            (scene, scene.AddObserver(scene.EndCloseEvent, self._on_scene_end_close)),
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

    # -- closing the scene -----------------------------------------------------------------------------------
    def _on_scene_start_close(self, caller, event) -> None:
        # SegmentEditor.py onSceneStartClose: editor.setSegmentationNode(None) -> vtkSlicerSegmentEditorLogic::
        # SetSegmentationNode (the parameter node's SetAndObserveSegmentationNode), then setActiveEffect(nullptr)
        self.node.SetAndObserveSegmentationNode(None)
        self.app.invoke(self.setActiveEffect, [None], "SegmentEditor.onSceneStartClose")

    def _on_scene_end_close(self, caller, event) -> None:
        if self.node.GetScene() is not self.scene:
            return  # not the module's singleton: gone with the scene
        for effect in self.effects:  # initializeParameterSetNode
            effect.setParameterSetNode(self.node)
            self.app.invoke(effect.setMRMLDefaults, [], f"{effect.name}.setMRMLDefaults")
        self.app.invoke(self.updateEffectsSectionFromMRML, [], "SegmentEditorWidget.onMRMLSceneEndCloseEvent")

    # -- slots the effects call --------------------------------------------------------------------------
    def saveStateForUndo(self) -> None:
        self.logic.SaveStateForUndo()

    def updateModifierLabelmap(self):
        if not self.logic.ResetModifierLabelmapToDefault():
            return None
        return self.logic.GetModifierLabelmap()
