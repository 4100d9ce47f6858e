"""Learning from the expert: Refine from my edits (adapting the decoder to corrected slices), fine-tuning on cases,
and the decoder training both use."""
