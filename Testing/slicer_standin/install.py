"""Installing the stand-in for one test: the ``qt`` / ``ctk`` / effect modules in ``sys.modules``, ``slicer.app``,
``slicer.mrmlScene``, ``slicer.modules`` and the rest on the ``slicer`` module, all undone by pytest's
``monkeypatch``."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import List

from . import mrml_widgets, qt_core, qt_item_views, qt_widgets
from .application import MarkupsLogicStandin, SlicerApplicationStandin
from .ctk_widgets import make_ctk_module
from .event_loop import APP, EventLoop
from .mrml_widgets import qMRMLWidget
from .parameter_node_wrapper import make_parameter_node_wrapper_module
from .scripted_effect import (
    MODIFICATION_MODES,
    AbstractScriptedSegmentEditorEffect,
    EffectFactoryStandin,
    ScriptedEffectStandin,
)
from .scripted_module import ScriptedModuleStandin, load_module, make_scripted_loadable_module
from .segment_editor import SegmentEditorWidgetStandin
from .slice_views import SliceViewsStandin
from .ui_loader import QUiLoader, descendants

slicer = __import__("slicer")
vtk = __import__("vtk")


def make_qt_module() -> types.ModuleType:
    module = types.ModuleType("qt")
    module.__doc__ = "Stand-in for PythonQt's qt module (Testing/slicer_standin)."
    for source in (qt_core, qt_widgets, qt_item_views):
        for name in source.__all__:
            setattr(module, name, getattr(source, name))
    module.QUiLoader = QUiLoader
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
    modules: List[ScriptedModuleStandin] = field(default_factory=list)

    @property
    def loop(self) -> EventLoop:
        return self.app.loop

    def segment_editor(self, editor_node, editor_logic) -> SegmentEditorWidgetStandin:
        editor = SegmentEditorWidgetStandin(self.app, editor_node.GetScene(), editor_node, editor_logic,
                                            self.interaction_node)
        self.editors.append(editor)
        return editor

    def load_module(self, path: str) -> ScriptedModuleStandin:
        """Slicer loads the scripted module file ``path`` at startup (its widget is made when first shown)."""
        module = load_module(path)
        self.modules.append(module)
        return module

    def select_module(self, name: str) -> None:
        """The user opens module ``name`` (``slicer.util.selectModule``)."""
        self.app.main_window.moduleSelector().selectModule(name)

    def close(self) -> None:
        """The application quits: the module panel exits the shown module, every module is unloaded
        (``moduleAboutToBeUnloaded``, which runs a scripted widget's ``cleanup()``) and its widgets leave the scene."""
        self.select_module("")
        for module in self.modules:
            self.app.module_manager._emit("moduleAboutToBeUnloaded", module.name)
            if module.widget is not None:
                for widget in descendants(module.widget):
                    if isinstance(widget, qMRMLWidget):
                        widget.setMRMLScene(None)
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
    for name in mrml_widgets.__all__:
        monkeypatch.setattr(slicer, name, getattr(mrml_widgets, name), raising=False)
    monkeypatch.setattr(slicer, "selfTests", {}, raising=False)
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
