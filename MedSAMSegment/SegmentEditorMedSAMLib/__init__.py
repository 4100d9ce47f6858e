"""The MedSAM Segment Editor effect (Qt); registered by the MedSAMSegment module at startup."""

from .SegmentEditorEffect import *  # noqa: F401,F403
