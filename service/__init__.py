"""The neural shader service."""
