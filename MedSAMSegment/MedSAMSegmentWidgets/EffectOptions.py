"""The MedSAM effect's options: strategy, intensity, model, checkpoint, device, the server's address and token,
the accuracy options and Live preview, kept as effect parameters (``MedSAM.<name>`` on the Segment Editor's
parameter node). Qt widgets only; the choices and their meaning are in ``MedSAMSegmentLib.scene.effect``."""

import qt
from MedSAMSegmentLib.settings import PUBLISHED, SegmentationSettings

#: The accuracy options' effect parameters -> their settings names (every accuracy option of the command line).
ACCURACY_PARAMETERS = {"".join(part.title() for part in name.split("_")): name for name in PUBLISHED}
#: Effect parameters (``scriptedEffect.setParameter`` stores them as ``MedSAM.<name>``) -> default.
PARAMETERS = {"Strategy": SegmentationSettings().strategy, "Intensity": "auto", "Model": "lite", "Checkpoint": "",
              "Device": "auto", "Preview": "1",
              **{parameter: getattr(SegmentationSettings(), name) for parameter, name in ACCURACY_PARAMETERS.items()}}


def setDefaults(scriptedEffect):
    """Give every effect parameter its default (the widgets need not exist yet)."""
    for name, value in PARAMETERS.items():
        scriptedEffect.setParameterDefault(name, value)


def parameter(scriptedEffect, name):
    """An effect parameter, or its default when it is not stored: ``scriptedEffect.parameter`` logs an error for a
    parameter that is not on the node, and an empty default (Checkpoint) is never stored
    (qSlicerSegmentEditorAbstractEffect::setCommonParameter skips an empty value that is not there yet)."""
    if not scriptedEffect.parameterDefined(name):
        return PARAMETERS[name]
    return scriptedEffect.parameter(name)


def settings(scriptedEffect):
    """The stored options as ``effect_settings.EffectSettings``."""
    from MedSAMSegmentLib.scene import effect_settings

    return effect_settings.EffectSettings(
        strategy=parameter(scriptedEffect, "Strategy"),
        intensity=parameter(scriptedEffect, "Intensity"),
        model=parameter(scriptedEffect, "Model"),
        checkpoint=parameter(scriptedEffect, "Checkpoint") or None,
        device=parameter(scriptedEffect, "Device"),
        preview=parameter(scriptedEffect, "Preview") != "0",
        **{name: parameter(scriptedEffect, key) for key, name in ACCURACY_PARAMETERS.items()},
    )


class EffectOptions:
    """Builds the option widgets into ``scriptedEffect``'s options frame (the Live preview check box is made here
    and placed by the effect) and moves their values between the widgets and the effect parameters: a change in
    a widget is stored at once."""

    def __init__(self, scriptedEffect):
        import ctk
        from MedSAMSegmentLib.scene import effect_settings

        self.scriptedEffect = scriptedEffect
        self.strategyCombo = self._combo(effect_settings.STRATEGY_CHOICES, "Strategy:")
        self.intensityCombo = self._combo(effect_settings.INTENSITY_CHOICES, "Intensity:")
        self.modelCombo = self._combo(effect_settings.MODEL_CHOICES, "Model:")
        self.checkpointPath = ctk.ctkPathLineEdit()
        self.checkpointPath.filters = ctk.ctkPathLineEdit.Files
        self.checkpointPath.nameFilters = ["Model checkpoint (*.pth)"]
        self.checkpointPath.toolTip = effect_settings.CHECKPOINT_TIP
        scriptedEffect.addLabeledOptionsWidget("Checkpoint:", self.checkpointPath)
        self.deviceCombo = self._combo(effect_settings.DEVICE_CHOICES, "Device:")
        self._setupServerFields()
        self._setupAccuracyOptions()
        self.previewCheckBox = qt.QCheckBox("Live preview")
        self.previewCheckBox.toolTip = ("While you draw, show the result of the key boxes placed so far (light "
                                        "yellow, not saved); Segment writes the result into the segment")
        for _parameter, combo in self.combos():
            combo.connect("currentIndexChanged(int)", self.store)
        self.checkpointPath.connect("currentPathChanged(QString)", self.store)

    def _combo(self, choices, label):
        combo = qt.QComboBox()
        for key, text in choices.items():
            combo.addItem(text, key)
        self.scriptedEffect.addLabeledOptionsWidget(label, combo)
        return combo

    def _setupServerFields(self):
        """The server's address and token, shown for Device "MedSAM server"; kept in Slicer's settings (never in
        the scene), read by :meth:`applyServer`."""
        from MedSAMSegmentLib.remote.server_address import stored_server

        self.serverFrame = qt.QWidget()
        form = qt.QFormLayout(self.serverFrame)
        self.serverUrlEdit = qt.QLineEdit()
        self.serverUrlEdit.placeholderText = "http://gpu-server:8765"
        self.serverUrlEdit.toolTip = "The address 'medsam-segment serve' printed"
        self.serverTokenEdit = qt.QLineEdit()
        self.serverTokenEdit.echoMode = qt.QLineEdit.Password
        self.serverTokenEdit.placeholderText = "empty for a server on this machine"
        self.serverTokenEdit.toolTip = "The server's token (kept in Slicer's settings, never saved with the scene)"
        form.addRow("Server:", self.serverUrlEdit)
        form.addRow("Token:", self.serverTokenEdit)
        stored = stored_server(qt.QSettings())
        if stored is not None:
            self.serverUrlEdit.text, self.serverTokenEdit.text = stored.url, stored.token or ""
        self.scriptedEffect.addOptionsWidget(self.serverFrame)
        for edit in (self.serverUrlEdit, self.serverTokenEdit):
            edit.connect("editingFinished()", self.onServerEdited)

    def _setupAccuracyOptions(self):
        import ctk
        from MedSAMSegmentLib.scene import effect_settings

        accuracy = ctk.ctkCollapsibleButton()
        accuracy.text = "Accuracy options"
        accuracy.toolTip = "The command line's accuracy options; the defaults are what the evaluation chose"
        accuracy.collapsed = True
        accuracyLayout = qt.QFormLayout(accuracy)
        self.accuracyCombos = {}
        for parameter, name in ACCURACY_PARAMETERS.items():
            label, unused = effect_settings.ACCURACY_OPTIONS[name]
            combo = qt.QComboBox()
            for key, text in effect_settings.accuracy_menu(name).items():
                combo.addItem(text, key)
            accuracyLayout.addRow(label + ":", combo)
            self.accuracyCombos[parameter] = combo
        self.scriptedEffect.addOptionsWidget(accuracy)

    def combos(self):
        """Every option combo box, with its effect parameter: ``[(parameter, combo), ...]``."""
        return [("Strategy", self.strategyCombo), ("Intensity", self.intensityCombo), ("Model", self.modelCombo),
                ("Device", self.deviceCombo), *self.accuracyCombos.items()]

    def load(self):
        """Show the stored parameters in the widgets (no change signal is sent)."""
        for name, combo in self.combos():
            wasBlocked = combo.blockSignals(True)
            combo.setCurrentIndex(max(combo.findData(self.parameter(name)), 0))
            combo.blockSignals(wasBlocked)
        wasBlocked = self.checkpointPath.blockSignals(True)
        self.checkpointPath.currentPath = self.parameter("Checkpoint")
        self.checkpointPath.blockSignals(wasBlocked)
        wasBlocked = self.previewCheckBox.blockSignals(True)
        self.previewCheckBox.checked = self.parameter("Preview") != "0"
        self.previewCheckBox.blockSignals(wasBlocked)
        self.applyServer()

    def store(self, *unused):
        """Keep the widgets' values as the effect parameters."""
        for name, combo in self.combos():
            self.scriptedEffect.setParameter(name, combo.currentData)
        self.scriptedEffect.setParameter("Checkpoint", self.checkpointPath.currentPath)
        self.scriptedEffect.setParameter("Preview", "1" if self.previewCheckBox.checked else "0")
        self.applyServer()

    def parameter(self, name):
        return parameter(self.scriptedEffect, name)

    def onServerEdited(self):
        from MedSAMSegmentLib.remote.server_address import store_server

        store_server(qt.QSettings(), self.serverUrlEdit.text, self.serverTokenEdit.text)
        self.applyServer()

    def applyServer(self):
        """Send background runs to the server when Device is "MedSAM server", else to the local worker."""
        from MedSAMSegmentLib.remote.server_address import SERVER_DEVICE, stored_server
        from MedSAMSegmentLib.scene import effect

        onServer = self.parameter("Device") == SERVER_DEVICE
        self.serverFrame.visible = onServer
        effect.shared_logic().use_server(stored_server(qt.QSettings()) if onServer else None)
