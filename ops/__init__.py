"""Operators: thin classes that check input and call into ``addon``."""
