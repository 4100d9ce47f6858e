"""Qt widget helpers of the MedSAM module and its Segment Editor effect (thin: the work is in MedSAMSegmentLib).

A package of its own because Slicer loads the effect's file as the module named after its folder
(``SegmentEditorMedSAMLib``), which then is no package to import helpers from.
"""
