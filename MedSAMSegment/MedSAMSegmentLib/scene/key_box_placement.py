"""Placing key boxes one after another, and watching what the key box table shows (MRML and VTK only, no Qt).

The Qt effect owns one :class:`KeyBoxPlacement` and one :class:`KeyBoxWatcher` and forwards to them; both run on
real ``slicer-core`` scenes in tests.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from . import key_box_nodes, mrml_markups
from .key_box_nodes import RunTarget


class KeyBoxPlacement:
    """Place ROIs or lines as key boxes of the selected target, one after another, until stopped.

    ``target()`` gives the target a new box belongs to (None: placing stops); ``changed()`` is called when a box
    is complete. Each node is placed in single place mode (``SwitchToSinglePlaceMode``, one Modified event that
    already shows Place mode), so Slicer returns the interaction node to View/Transform after each complete node;
    :meth:`interaction_mode_changed` then starts the next node, or stops when the node was left unfinished (a right
    click, another mouse mode, the Segment Editor deselecting the effect). The user's place mode persistence (the
    mouse-mode toolbar's "place multiple") is given back when placing stops.
    """

    def __init__(self, scene, app_logic, target: Callable[[], Optional[RunTarget]],
                 changed: Callable[[], None] = lambda: None) -> None:
        self.scene = scene
        self.app_logic = app_logic
        self._target = target
        self._changed = changed
        self.placing_class: Optional[str] = None
        self.pending = None  # the node being placed now
        self._pending_tags: List[int] = []
        self._pending_view: Optional[str] = None  # layout name of the view its point last followed the mouse in
        self._user_persistence: Optional[int] = None  # the place mode persistence before placing started

    def toggle(self, class_name: str) -> None:
        """The Place button: start placing ``class_name`` nodes, or stop if they are being placed."""
        was_placing = self.placing_class == class_name
        self.stop()
        if not was_placing and self._target() is not None:
            self.placing_class = class_name
            self._user_persistence = self.app_logic.GetInteractionNode().GetPlaceModePersistence()
            self._place_next()

    def _place_next(self) -> None:
        target = self._target()
        if target is None:
            self.stop()
            return
        kind = "box" if self.placing_class == mrml_markups.ROI_CLASS else "line"
        node = self.scene.AddNewNodeByClass(self.placing_class, self.scene.GenerateUniqueName(f"MedSAM {kind}"))
        node.CreateDefaultDisplayNodes()
        key_box_nodes.assign(node, target)
        self.pending, self._pending_view = node, None
        self._pending_tags = [node.AddObserver(event, lambda *unused: self._point_moved())
                              for event in (node.PointAddedEvent, node.PointModifiedEvent)]
        self._pending_tags.append(node.AddObserver(node.PointPositionDefinedEvent,
                                                   lambda *unused: self._point_defined()))
        selection = self.app_logic.GetSelectionNode()
        selection.SetReferenceActivePlaceNodeClassName(self.placing_class)
        selection.SetActivePlaceNodeID(node.GetID())
        # Not SetPlaceModePersistence(0) then Place: a change of persistence fires Modified while the mode is not
        # Place yet, and interaction_mode_changed would stop placing (vtkMRMLInteractionNode.cxx).
        self.app_logic.GetInteractionNode().SwitchToSinglePlaceMode()

    def _point_moved(self) -> None:
        view = self.pending.GetAttribute(mrml_markups.MOVING_IN_SLICE_VIEW_ATTRIBUTE) if self.pending else None
        if view:
            self._pending_view = view

    def _point_defined(self) -> None:
        node = self.pending
        if node is None:
            return
        if mrml_markups.markups_is_placed(node):
            mrml_markups.record_placement_view(node, self.scene)  # the drawn view gives the slice axis
            self._changed()
        elif node.IsA(mrml_markups.ROI_CLASS) and node.GetNumberOfDefinedControlPoints() == 1:
            # The first corner: turn the box to the view, so that the second makes the rectangle drawn there.
            point = [0.0, 0.0, 0.0]
            node.GetNthControlPointPositionWorld(0, point)
            view = mrml_markups.placement_slice_node(self.scene, point, self._pending_view)
            mrml_markups.orient_roi_to_view(node, view)

    def _release_pending(self):
        pending, self.pending = self.pending, None
        if pending is not None:
            for tag in self._pending_tags:
                pending.RemoveObserver(tag)
        self._pending_tags = []
        return pending

    def stop(self) -> None:
        """Leave Place mode and give back the user's place mode persistence; an unfinished key box node is
        removed."""
        self.placing_class = None
        pending = self._release_pending()
        if pending is not None and not mrml_markups.markups_is_placed(pending) and pending.GetScene() is not None:
            self.scene.RemoveNode(pending)
        interaction = self.app_logic.GetInteractionNode()
        if interaction is None:
            return
        if interaction.GetCurrentInteractionMode() == interaction.Place:
            interaction.SetCurrentInteractionMode(interaction.ViewTransform)
        persistence, self._user_persistence = self._user_persistence, None
        if persistence is not None:
            interaction.SetPlaceModePersistence(persistence)

    def interaction_mode_changed(self, interaction_node) -> None:
        """Forwarded from the effect's ``interactionNodeModified``: continue with the next box, or stop."""
        if self.placing_class is None or interaction_node.GetCurrentInteractionMode() == interaction_node.Place:
            return
        if self.pending is not None and mrml_markups.markups_is_placed(self.pending):
            self._release_pending()
            self._place_next()
        else:
            self.stop()


class KeyBoxWatcher:
    """Calls ``changed()`` when what the key box table shows may have changed: the segment editor node (the
    selected segment, segmentation or volume) or any ROI or line node (added, removed, placed, moved, assigned).
    The Segment Editor itself tells an effect none of these. Other nodes coming and going (a preview's segmentation,
    the temporary segment editor node a write uses) are no change."""

    def __init__(self, scene, editor_node, changed: Callable[[], None]) -> None:
        self.scene = scene
        self._changed = changed
        self._observations: List[Tuple[object, int]] = []
        self._markups: Dict[str, Tuple[object, int]] = {}
        if editor_node is not None:
            self._observations.append((editor_node, editor_node.AddObserver("ModifiedEvent", self._on_change)))
        for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent):
            self._observations.append((scene, scene.AddObserver(event, self._on_scene_change)))
        self._follow_markups()

    def _on_change(self, *unused) -> None:
        self._changed()

    def _on_scene_change(self, *unused) -> None:
        if self._follow_markups():
            self._changed()

    def _follow_markups(self) -> bool:
        """Observe the ROI and line nodes now in the scene; returns whether they changed."""
        present = {}
        for class_name in key_box_nodes.MARKUPS_CLASSES:
            collection = self.scene.GetNodesByClass(class_name)
            for n in range(collection.GetNumberOfItems()):
                node = collection.GetItemAsObject(n)
                present[node.GetID()] = node
        changed = False
        for node_id in list(self._markups):
            node, tag = self._markups[node_id]
            if present.get(node_id) is not node:
                node.RemoveObserver(tag)
                del self._markups[node_id]
                changed = True
        for node_id, node in present.items():
            if node_id not in self._markups:
                self._markups[node_id] = (node, node.AddObserver("ModifiedEvent", self._on_change))
                changed = True
        return changed

    def stop(self) -> None:
        """Remove every observer."""
        for obj, tag in self._observations:
            obj.RemoveObserver(tag)
        for node, tag in self._markups.values():
            node.RemoveObserver(tag)
        self._observations, self._markups = [], {}


def markups_center_ras(node) -> List[float]:
    """Where to jump the views for a key box node: an ROI's centre, a line's midpoint (world RAS)."""
    if node.IsA(mrml_markups.ROI_CLASS):
        center = [0.0, 0.0, 0.0]
        node.GetCenterWorld(center)
        return center
    a, b = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    node.GetNthControlPointPositionWorld(0, a)
    node.GetNthControlPointPositionWorld(1, b)
    return [(x + y) / 2.0 for x, y in zip(a, b)]
