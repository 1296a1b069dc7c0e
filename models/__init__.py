"""Networks and numeric code: torch/numpy, never bpy."""
