"""Library of the PerX2CT MONAI Label app: the study layout, the infer task and a compatibility shim."""
