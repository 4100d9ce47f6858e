"""What speaks to Slicer's scene (MRML, through ``slicer-core`` in tests), never to Qt: volumes, segments and
markups; key box nodes and their placement; the effect's logic, the expert's edits, the live preview, the sample
scene, the dependency plan, and the GUI stall meter."""
