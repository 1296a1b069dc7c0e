"""The shader runtime: a Python environment with torch that the add-on makes itself."""
