"""The MedSAM effect's key box panel: Place box and Place line (boxes placed one after another), Take in for ROIs
and lines drawn elsewhere on the volume's slices, and the table of the selected segment's key boxes (name, slice,
size, problem: a click jumps to one, Delete removes it). Qt widgets only; the work is in
``MedSAMSegmentLib.scene.key_box_placement`` and ``key_box_nodes``."""

import qt
import slicer

#: The key box node classes the Place buttons make.
BOX, LINE = "vtkMRMLMarkupsROINode", "vtkMRMLMarkupsLineNode"


class KeyBoxPanel:
    """The button row (``placeRow``) and the table (``table``), placed by the effect; ``target()`` gives the
    selected volume, segmentation and segment (``key_box_nodes.RunTarget``) or None; ``onTookIn(text)`` receives
    the status line after a take-in."""

    def __init__(self, target, onTookIn):
        from MedSAMSegmentLib.scene.key_box_placement import KeyBoxPlacement

        self.target = target
        self.onTookIn = onTookIn
        self.placeBoxButton = qt.QPushButton("Place box")
        self.placeBoxButton.checkable = True
        self.placeBoxButton.toolTip = "Click two opposite corners of a box around the target in a slice view"
        self.placeLineButton = qt.QPushButton("Place line")
        self.placeLineButton.checkable = True
        self.placeLineButton.toolTip = "Click both ends of the target's longest diameter (RECIST) in a slice view"
        self.takeInButton = qt.QPushButton("Take in markups")
        self.takeInButton.toolTip = "Make ROIs and lines drawn elsewhere on this volume's slices key boxes here"
        self.table = qt.QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["Name", "Slice", "Size (px)", "Note"])
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setSelectionBehavior(qt.QAbstractItemView.SelectRows)
        self.table.setEditTriggers(qt.QAbstractItemView.NoEditTriggers)
        self.table.toolTip = "The selected segment's key boxes: click a row to jump to it, Delete removes it"
        self.deleteShortcut = qt.QShortcut(qt.QKeySequence(qt.Qt.Key_Delete), self.table)
        self.deleteShortcut.setContext(qt.Qt.WidgetShortcut)
        self.placeRow = qt.QHBoxLayout()
        for button in (self.placeBoxButton, self.placeLineButton, self.takeInButton):
            self.placeRow.addWidget(button)
        self.placeBoxButton.connect("clicked()", lambda: self.onPlaceClicked(BOX))
        self.placeLineButton.connect("clicked()", lambda: self.onPlaceClicked(LINE))
        self.takeInButton.connect("clicked()", self.onTakeIn)
        self.table.connect("cellClicked(int,int)", self.onClicked)
        self.deleteShortcut.connect("activated()", self.onDelete)
        self.placement = KeyBoxPlacement(slicer.mrmlScene, slicer.app.applicationLogic(), target, self.update)

    def onPlaceClicked(self, className):
        self.placement.toggle(className)
        self.updatePlaceButtons()

    def stopPlacing(self):
        """Leave Place mode; an unfinished key box node is removed."""
        self.placement.stop()
        self.updatePlaceButtons()

    def interactionModeChanged(self, interactionNode):
        """Keep placing after each box (the C++ default would deselect the effect)."""
        self.placement.interaction_mode_changed(interactionNode)
        self.updatePlaceButtons()

    def updatePlaceButtons(self):
        for button, className in ((self.placeBoxButton, BOX), (self.placeLineButton, LINE)):
            button.checked = self.placement.placing_class == className

    def nodes(self, target=None):
        """The key box nodes of ``target`` (default: the selected segment's), or [] without a target."""
        from MedSAMSegmentLib.scene import key_box_nodes

        target = target or self.target()
        return key_box_nodes.key_box_nodes(slicer.mrmlScene, target) if target else []

    def update(self):
        from MedSAMSegmentLib.scene import key_box_nodes

        target = self.target()
        volume = slicer.mrmlScene.GetNodeByID(target.volume_id) if target else None
        nodes = self.nodes(target) if target else []
        rows = key_box_nodes.key_box_rows(nodes, volume) if volume is not None and nodes else []
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            size = f"{row.width:.0f} x {row.height:.0f}" if row.width is not None else ""
            values = [row.name, "" if row.slice_index is None else str(row.slice_index), size, row.problem]
            for c, value in enumerate(values):
                item = qt.QTableWidgetItem(value)
                item.setData(qt.Qt.UserRole, row.node_id)
                self.table.setItem(r, c, item)
        others = len(key_box_nodes.take_in_candidates(slicer.mrmlScene, target)) if target else 0
        self.takeInButton.text = f"Take in {others} markups" if others else "Take in markups"
        self.takeInButton.enabled = others > 0 and target is not None

    def onTakeIn(self):
        from MedSAMSegmentLib.scene import key_box_nodes

        target = self.target()
        if target is not None:
            count = key_box_nodes.take_in(key_box_nodes.take_in_candidates(slicer.mrmlScene, target), target)
            self.onTookIn(f"Took in {count} markups as key boxes of the selected segment.")
            self.update()

    def _rowNode(self, row):
        item = self.table.item(row, 0)
        return slicer.mrmlScene.GetNodeByID(item.data(qt.Qt.UserRole)) if item else None

    def onClicked(self, row, column):
        from MedSAMSegmentLib.scene.key_box_placement import markups_center_ras

        node = self._rowNode(row)
        if node is not None:
            slicer.modules.markups.logic().JumpSlicesToLocation(*markups_center_ras(node), True)

    def onDelete(self):
        node = self._rowNode(self.table.currentRow())
        if node is not None:
            slicer.mrmlScene.RemoveNode(node)
            self.update()
