"""The MedSAM effect's run panel: Segment, Refine from my edits, Cancel (and the Live preview check box given to
it), the progress bar, the status line and the flagged slices. Qt widgets only; the effect starts and ends runs."""

import qt


class RunPanel:
    """Builds the panel into ``scriptedEffect``'s options frame, with ``previewCheckBox`` in the button row;
    ``jumpToSlice(index)`` is called when a flagged slice is clicked."""

    def __init__(self, scriptedEffect, previewCheckBox, jumpToSlice):
        self.jumpToSlice = jumpToSlice
        buttons = qt.QHBoxLayout()
        self.segmentButton = qt.QPushButton("Segment")
        self.segmentButton.objectName = "SegmentEditorEffectApply"
        self.cancelButton = qt.QPushButton("Cancel")
        self.cancelButton.enabled = False
        self.refineButton = qt.QPushButton("Refine from my edits")
        self.refineButton.toolTip = ("After Segment, paint or erase at least 2 slices of the result; MedSAM adapts "
                                     "its decoder to them and segments the slices you did not touch again (kept "
                                     "only when it predicts your own slices better)")
        for widget in (self.segmentButton, self.refineButton, self.cancelButton, previewCheckBox):
            buttons.addWidget(widget)
        scriptedEffect.addOptionsWidget(buttons)
        self.progressBar = qt.QProgressBar()
        self.progressBar.visible = False
        scriptedEffect.addOptionsWidget(self.progressBar)
        self.statusLabel = qt.QLabel("")
        self.statusLabel.wordWrap = True
        scriptedEffect.addOptionsWidget(self.statusLabel)
        self.flaggedList = qt.QListWidget()
        self.flaggedList.toolTip = "Slices to review; click one to jump to it"
        scriptedEffect.addLabeledOptionsWidget("Flagged slices:", self.flaggedList)
        self.flaggedList.connect("itemClicked(QListWidgetItem*)", lambda item: jumpToSlice(item.data(qt.Qt.UserRole)))

    def started(self, status):
        """A run started: only Cancel is pressable, the progress bar is busy until the first progress."""
        self.segmentButton.enabled = False
        self.refineButton.enabled = False
        self.cancelButton.enabled = True
        self.progressBar.visible = True
        self.progressBar.maximum = 0
        self.flaggedList.clear()
        self.statusLabel.text = status

    def progress(self, done, total, message):
        self.progressBar.maximum = max(total, 1)
        self.progressBar.value = done
        self.progressBar.format = f"{message}: %v / %m"

    def ended(self, status, flagged=()):
        """The run ended with ``status``; ``flagged`` lists the slices to review as ``(index, reason)``."""
        self.statusLabel.text = status
        self.segmentButton.enabled = True
        self.refineButton.enabled = True
        self.cancelButton.enabled = False
        self.progressBar.visible = False
        for index, reason in flagged:
            item = qt.QListWidgetItem(f"slice {index}: {reason}")
            item.setData(qt.Qt.UserRole, index)
            self.flaggedList.addItem(item)
