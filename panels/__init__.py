"""Panels, lists and menus: drawing only."""
