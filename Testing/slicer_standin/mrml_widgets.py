"""MRML widgets of Slicer's ``slicer`` module: ``qMRMLWidget`` and the node selectors ``qMRMLNodeComboBox`` /
``qMRMLCheckableNodeComboBox``, listing the nodes of a real MRML scene."""

from __future__ import annotations

from typing import List

from .qt_core import Qt
from .qt_widgets import QWidget

#: The names the stand-in puts on the ``slicer`` module.
__all__ = ["qMRMLWidget", "qMRMLNodeComboBox", "qMRMLCheckableNodeComboBox"]


class qMRMLWidget(QWidget):
    """``setMRMLScene`` emits ``mrmlSceneChanged(vtkMRMLScene*)`` when the scene changes (Libs/MRML/Widgets/
    qMRMLWidget.cxx); a .ui file connects that signal to its node selectors' ``setMRMLScene``."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._scene = None

    def mrmlScene(self):
        return self._scene

    def setMRMLScene(self, scene) -> None:
        if scene is self._scene:
            return
        self._scene = scene
        self._emit("mrmlSceneChanged", scene)


class qMRMLNodeComboBox(qMRMLWidget):
    """A node selector (Libs/MRML/Widgets/qMRMLNodeComboBox.cxx, with qMRMLSortFilterProxyModel.cxx for which
    nodes it lists):

    * it lists the scene's nodes that are of one of ``nodeTypes`` (their subclasses too, unless
      ``showChildNodeTypes`` is off, and not those of ``hideChildNodeTypes``), not hidden from editors (unless
      ``showHidden``), in scene order; ``noneEnabled`` adds a "None" item first;
    * the current node changes by ``setCurrentNode`` / ``setCurrentNodeID`` or the user's pick (:meth:`select`);
      a node that is not listed selects "None" (or nothing). Each change of the current item emits
      ``currentNodeChanged(vtkMRMLNode*)``, ``currentNodeChanged(bool)`` and ``currentNodeIDChanged(QString)``
      (``emitCurrentNodeChanged``);
    * ``setMRMLScene`` fills the list while its "scene switching" flag silences those signals; without
      ``noneEnabled`` the first node is then current (QComboBox selects the first row inserted into it);
    * when the current node leaves the scene, the node that takes its row becomes current, else the one before
      it, else "None" (QComboBox ``_q_rowsRemoved``), with the signals; a node added to a selector that has no
      current node and no "None" item becomes current (``_q_rowsInserted``).
    """

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.nodeTypes: List[str] = []
        self.hideChildNodeTypes: List[str] = []
        self.showChildNodeTypes = True
        self.showHidden = False
        self.noneEnabled = False
        self.addEnabled = True
        self.removeEnabled = True
        self.editEnabled = False
        self.renameEnabled = False
        self.noneDisplay = "None"
        self.selectNodeUponCreation = True
        self._current = None
        self._listed: List[object] = []  # the listed nodes at the last update, for finding a removed node's row
        self._tags: List[int] = []

    # -- what it lists ------------------------------------------------------------------------------------
    def _accepts(self, node) -> bool:
        if node is None or (node.GetHideFromEditors() and not self.showHidden):
            return False
        if any(node.IsA(hidden) for hidden in self.hideChildNodeTypes):
            return False
        if self.showChildNodeTypes:
            return any(node.IsA(kind) for kind in self.nodeTypes)
        return node.GetClassName() in self.nodeTypes

    def nodes(self) -> List[object]:
        scene = self.mrmlScene()
        if scene is None:
            return []
        collection = scene.GetNodes()
        found = [collection.GetItemAsObject(n) for n in range(collection.GetNumberOfItems())]
        return [node for node in found if self._accepts(node)]

    def nodeCount(self) -> int:
        return len(self.nodes())

    def nodeFromIndex(self, index: int):
        nodes = self.nodes()
        return nodes[index] if 0 <= index < len(nodes) else None

    # -- the scene ------------------------------------------------------------------------------------------
    def setMRMLScene(self, scene) -> None:
        if scene is self.mrmlScene():
            return
        old = self.mrmlScene()
        for tag in self._tags if old is not None else []:
            old.RemoveObserver(tag)
        self._tags = []
        super().setMRMLScene(scene)
        previous = self._current
        self._listed = self.nodes()
        if previous is not None and previous not in self._listed:
            self._current = None
        if self._current is None and not self.noneEnabled and self._listed:
            self._current = self._listed[0]  # selected while scene switching: no signal
        if scene is not None:
            self._tags = [scene.AddObserver(scene.NodeAddedEvent, self._on_node_added),
                          scene.AddObserver(scene.NodeRemovedEvent, self._on_node_removed)]
        self.setEnabled(scene is not None)

    def _on_node_added(self, caller, event) -> None:
        listed = self.nodes()
        added = [node for node in listed if node not in self._listed]
        self._listed = listed
        if added and self._current is None and not self.noneEnabled:
            self._set_current(added[0])

    def _on_node_removed(self, caller, event) -> None:
        before = self._listed
        self._listed = self.nodes()
        self._nodes_removed(before)
        if self._current is None or self._current in self._listed:
            return
        row = before.index(self._current) if self._current in before else len(self._listed)
        if row < len(self._listed):
            self._set_current(self._listed[row])
        elif self._listed:
            self._set_current(self._listed[-1])
        else:
            self._set_current(None)

    def _nodes_removed(self, before: List[object]) -> None:
        """For subclasses: ``before`` were listed before a removal."""

    # -- the current node -----------------------------------------------------------------------------------
    def currentNode(self):
        return self._current

    def currentNodeID(self) -> str:
        return self._current.GetID() if self._current is not None else ""

    def setCurrentNode(self, node) -> None:
        self._set_current(node if node is not None and node in self.nodes() else None)

    def setCurrentNodeID(self, node_id: str) -> None:
        scene = self.mrmlScene()
        self.setCurrentNode(scene.GetNodeByID(node_id) if scene is not None and node_id else None)

    def _set_current(self, node) -> None:
        if node is self._current:
            return
        self._current = node
        self._emit("currentNodeChanged", node, overload="vtkMRMLNode*")
        self._emit("currentNodeChanged", node is not None, overload="bool")
        self._emit("currentNodeIDChanged", node.GetID() if node is not None else "")

    def select(self, node) -> None:
        """Test helper: the user picks ``node`` (None: the "None" item) in the list."""
        if node is None and not self.noneEnabled:
            raise ValueError("this selector has no None item")
        if node is not None and node not in self.nodes():
            raise ValueError(f"{node.GetName()} is not listed")
        self._set_current(node)
        self._emit("nodeActivated", node)


class qMRMLCheckableNodeComboBox(qMRMLNodeComboBox):
    """A node selector whose nodes have check boxes, all unchecked when listed; no add, remove, edit or rename
    items (Libs/MRML/Widgets/qMRMLCheckableNodeComboBox.cxx). ``checkedNodes()`` are in list order;
    ``setCheckState`` of a node that is not listed does nothing; a change of checks emits
    ``checkedNodesChanged()`` (ctkCheckableComboBox ``checkedIndexesChanged``). A node that leaves the scene
    leaves the list and its check with it."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.addEnabled = False
        self.removeEnabled = False
        self._checked: List[object] = []

    def checkedNodes(self) -> List[object]:
        return [node for node in self.nodes() if node in self._checked]

    def uncheckedNodes(self) -> List[object]:
        return [node for node in self.nodes() if node not in self._checked]

    def allChecked(self) -> bool:
        return not self.uncheckedNodes()

    def noneChecked(self) -> bool:
        return not self.checkedNodes()

    def checkState(self, node) -> int:
        return Qt.Checked if node is not None and node in self.checkedNodes() else Qt.Unchecked

    def setCheckState(self, node, state) -> None:
        if node is None or node not in self.nodes():
            return
        checked = state == Qt.Checked
        if checked == (node in self._checked):
            return
        if checked:
            self._checked.append(node)
        else:
            self._checked.remove(node)
        self._emit("checkedNodesChanged")

    def _nodes_removed(self, before: List[object]) -> None:
        self._checked = [node for node in self._checked if node in self._listed]

    def check(self, nodes, state=Qt.Checked) -> None:
        """Test helper: the user ticks (or with ``Qt.Unchecked`` clears) the boxes of ``nodes``."""
        for node in nodes:
            self.setCheckState(node, state)
