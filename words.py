"""Counted nouns for reports: "1 frame", "3 frames"."""


def counted(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
