"""A small stand-in for the parts of the Slicer application that the MedSAM Qt files (the Segment Editor effect and
the module page) touch, on REAL slicer-core.

There is no Slicer application (no Qt, no PythonQt) here. ``slicer-core`` gives the real MRML scene, nodes and
module logics, the real ``vtkSlicerSegmentEditorLogic`` and Slicer's real ``slicer/util.py``. What is missing is
stood in for here, each behaviour copied from Slicer's source (the file is named where it is copied), one job per
file:

* ``event_loop.py``: the event loop (:class:`EventLoop`) that serves ``QTimer`` timeouts and records every tick and
  how long each timer callback took; ``run_until(predicate, timeout_s)`` is the test's ``app.exec()``.
* ``qt_core.py``, ``qt_widgets.py``, ``qt_item_views.py``, ``ctk_widgets.py``: ``qt`` / ``ctk`` as plain objects
  with Qt-property-style attributes, PythonQt-style ``connect("signal(args)", slot)``, and test helpers that act
  as the user does (``click()``, ``select()``, ``type_text()``, ``clickCell()``, ``clickItem()``, ``activate()``).
  A slot that raises is reported and swallowed, as PythonQt does, and recorded in
  :attr:`SlicerApplicationStandin.slot_errors` so that tests can assert that nothing raised out of a slot. Dialogs
  (``ctkMessageBox`` / ``QMessageBox``) are recorded in :attr:`SlicerApplicationStandin.dialogs`.
* ``mrml_widgets.py``: ``qMRMLWidget`` and the node selectors ``qMRMLNodeComboBox`` /
  ``qMRMLCheckableNodeComboBox`` on the real scene.
* ``ui_loader.py``: ``qt.QUiLoader``, which builds those widgets from a Qt Designer ``.ui`` file for Slicer's real
  ``slicer.util.loadUI`` / ``childWidgetVariables``.
* ``application.py``: ``slicer.app`` (:class:`SlicerApplicationStandin`), its main window and module panel, and
  ``slicer.modules.markups`` (the real Markups logic, its ``JumpSlicesToLocation`` calls recorded).
* ``scripted_effect.py`` and ``segment_editor.py``: the Segment Editor: the scripted effect adaptor
  (:class:`ScriptedEffectStandin`, after ``qSlicerSegmentEditorScriptedEffect.cxx`` and
  ``qSlicerSegmentEditorAbstractEffect.cxx``) and the editor widget (:class:`SegmentEditorWidgetStandin`, after
  ``qMRMLSegmentEditorWidget.cxx``) that activates effects and forwards interaction node changes to the active one.
* ``slice_views.py``: slice views and mouse clicks (:class:`SliceViewsStandin`): real ``vtkMRMLSliceNode`` views
  Red / Yellow / Green and the markups placement of ``vtkMRMLMarkupsDisplayableManager.cxx`` and
  ``vtkSlicerMarkupsWidget.cxx``, driving the real ``vtkMRMLMarkupsDisplayNode::UpdateActiveControlPointWorld`` (so
  the ROI and line nodes update themselves as in the application) and the real ``vtkMRMLInteractionNode``.
* ``scripted_module.py``: ``slicer.ScriptedLoadableModule`` and the C++ side that loads a module file, makes its
  widget and enters / exits it (:class:`ScriptedModuleStandin`); ``parameter_node_wrapper.py``:
  ``slicer.parameterNodeWrapper``.
* ``install.py``: :func:`install`, which puts all of it in place for one test.

Slicer source files cited are paths in the Slicer/Slicer repository.

Use :func:`install` from a fixture (it takes pytest's ``monkeypatch``, so everything is undone after the test).
"""

from .application import Dialog, SlotError
from .event_loop import EventLoop, Tick
from .install import SlicerStandin, install
from .scripted_effect import AbstractScriptedSegmentEditorEffect, ScriptedEffectStandin
from .scripted_module import ScriptedModuleStandin
from .segment_editor import SegmentEditorWidgetStandin
from .slice_views import SliceViewsStandin

__all__ = ["install", "SlicerStandin", "EventLoop", "Tick", "SegmentEditorWidgetStandin", "ScriptedEffectStandin",
           "SliceViewsStandin", "AbstractScriptedSegmentEditorEffect", "ScriptedModuleStandin", "Dialog", "SlotError"]
