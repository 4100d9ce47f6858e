"""Installing MedSAM's Python packages from Slicer, only when the user starts a run: PyTorch through the PyTorch
Utils extension, the rest with ``slicer.util.pip_install`` under a constraints file. Dialogs only; what to install
is decided in ``MedSAMSegmentLib.scene.dependencies``."""

import logging
import os
import tempfile

import slicer


def ensureDependencies(model="lite", parent=None):
    """Make sure PyTorch and the model packages can be imported; ask before installing anything.

    Returns True when everything is importable. PyTorch (and torchvision) come from the PyTorch Utils extension,
    which picks the build that matches the GPU driver; the other packages from ``slicer.util.pip_install`` with
    the installed torch, torchvision and Slicer's own numpy, SimpleITK, etc. pinned by a constraints file.
    """
    from MedSAMSegmentLib.scene import dependencies

    missing = dependencies.missing_requirements(model)
    if not missing:
        return True
    faster = dependencies.missing_accelerators(model)  # installed with the rest where the model runs on the CPU
    also = ("and, where it runs on the CPU, this one makes it faster:\n\n  " + "\n  ".join(faster) + "\n\n"
            if faster else "")
    message = (
        "MedSAM needs these Python packages, which are not installed yet:\n\n  " + "\n  ".join(missing) + "\n\n"
        + also + "PyTorch is installed by the PyTorch Utils extension, the others with pip. This downloads several "
        "hundred megabytes and can take some minutes. Install now?"
    )
    if not slicer.util.confirmOkCancelDisplay(message, "MedSAM: install dependencies", parent=parent):
        return False
    import importlib.util

    # From Slicer 5.12, pip_install shows its own modal progress dialog: a second one would open under it.
    packaging = importlib.util.find_spec("slicer.packaging") is not None
    progress = None if packaging else slicer.util.createProgressDialog(
        parent=parent, labelText="Installing MedSAM dependencies...", maximum=0, windowTitle="MedSAM"
    )
    try:
        if dependencies.missing_requirements(model, dependencies.PYTORCH_UTILS):
            try:
                import PyTorchUtils
            except ImportError:
                slicer.util.errorDisplay(
                    "The PyTorch Utils extension is missing. Install 'PyTorch' from the Extensions Manager, "
                    "restart Slicer, and press Segment again."
                )
                return False
            if progress is not None:
                progress.labelText = "Installing PyTorch (PyTorch Utils)..."
                slicer.app.processEvents()
            if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False) is None:
                slicer.util.errorDisplay("PyTorch was not installed; MedSAM cannot run without it.")
                return False
        constraints = os.path.join(tempfile.mkdtemp(prefix="medsam-"), "constraints.txt")
        with open(constraints, "w") as handle:
            handle.write(dependencies.pip_constraints())  # after PyTorch Utils: pins the torch it installed
        for text, args in dependencies.install_plan(model, constraints):
            if progress is not None:
                if progress.wasCanceled:
                    slicer.util.warningDisplay("Installation cancelled; MedSAM cannot run until it is complete.")
                    return False
                progress.labelText = text
                slicer.app.processEvents()
            requirements, options = dependencies.pip_install_call(args, packaging)
            slicer.util.pip_install(requirements, **options)  # list form: paths with spaces are safe
        import importlib

        importlib.invalidate_caches()
        still = dependencies.missing_requirements(model)
        if still:
            slicer.util.warningDisplay(
                "The packages were installed but cannot be imported yet (" + ", ".join(still) + "). "
                "Restart Slicer, then press Segment again."
            )
            return False
    except Exception as exc:  # noqa: BLE001 - shown to the user
        logging.exception("MedSAM dependency installation failed")
        slicer.util.errorDisplay(
            f"Installing the MedSAM dependencies failed: {exc}\n\nIf pip reports a conflict, a package needs a "
            "different torch than PyTorch Utils installed; see the Python console."
        )
        return False
    finally:
        if progress is not None:
            progress.close()
    slicer.util.showStatusMessage("MedSAM dependencies installed.", 3000)
    return True
