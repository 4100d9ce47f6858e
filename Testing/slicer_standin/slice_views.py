"""Slice views and mouse clicks: real ``vtkMRMLSliceNode`` views Red / Yellow / Green and the markups placement of
the displayable manager and markups widget, driving the real MRML display and interaction nodes."""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

slicer = __import__("slicer")
vtk = __import__("vtk")


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
    and orientation from the presets ``vtkMRMLSliceNode::AddDefaultSliceOrientationPresets`` adds), each with its
    real ``vtkMRMLSliceLogic`` registered with the application logic (as ``qSlicerLayoutManager`` does), and the
    user's mouse in them.

    Showing a volume (:meth:`show_volume`, what loading one does) runs Slicer's own
    ``vtkMRMLApplicationLogic::PropagateVolumeSelection``, whose ``FitSliceToBackground`` resets each view to its
    default orientation and rotates it to the volume's nearest axes (``RotateSliceToLowestVolumeAxes``): on a volume
    turned in-plane the views turn with it."""

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
        self.composite_nodes = {}
        self.logics: Dict[str, object] = {}
        self._logic_collection = vtk.vtkCollection()
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
            self.composite_nodes[layout_name] = self._composite_node(scene, layout_name)
            logic = slicer.vtkMRMLSliceLogic()  # qSlicerLayoutManager: one slice logic per slice view
            logic.SetMRMLApplicationLogic(app_logic)
            logic.SetMRMLScene(scene)
            logic.SetSliceNode(node)
            self.logics[layout_name] = logic
            self._logic_collection.AddItem(logic)
        app_logic.SetSliceLogics(self._logic_collection)
        self._last_view: Optional[str] = None

    @staticmethod
    def _composite_node(scene, layout_name: str):
        """The view's layers (background, foreground, label volumes), as ``vtkMRMLSliceLogic::
        UpdateSliceCompositeNode`` adds them: one ``vtkMRMLSliceCompositeNode`` per view, named by its layout name
        (also its singleton tag); ``slicer.util.setSliceViewerLayers`` sets every one of them."""
        node = scene.GetSingletonNode(layout_name, "vtkMRMLSliceCompositeNode")
        if node is None:
            node = slicer.vtkMRMLSliceCompositeNode()
            node.SetLayoutName(layout_name)
            node = scene.AddNode(node)
        return node

    def close(self) -> None:
        for manager in self.managers.values():
            manager.close()
        self.app_logic.SetSliceLogics(vtk.vtkCollection())
        for logic in self.logics.values():
            logic.SetMRMLScene(None)
        self.logics = {}

    def show_volume(self, volume_node) -> None:
        """The user loads ``volume_node`` and it is shown (qSlicerVolumesReader: the selection node's active
        volume, then ``PropagateVolumeSelection``, which fits every view to it and turns it to the volume's axes)."""
        self.selection_node.SetActiveVolumeID(volume_node.GetID())
        self.app_logic.PropagateVolumeSelection(1)

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
