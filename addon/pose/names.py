"""Which shape-key names express which of the 17 expression targets (no bpy here).

Names are compared after ``normalise_name``: Unicode NFKC (full-width ２ -> 2, half-width
katakana -> full-width), lower case, a trailing ``.001``-style suffix removed, a VRoid
mesh/material prefix dropped (``Face.M_F00_000_00_Fcl_BRW_Angry`` -> ``Fcl_BRW_Angry``),
and spaces, ``_``, ``-`` and ``.`` dropped (so ``Blink_L``, ``blink.l`` and ``BLINK L``
meet).

VRoid's brow keys have no left/right halves: ``Fcl_BRW_Angry`` -> brow_angry,
``Fcl_BRW_Surprised`` (else ``Fcl_BRW_Joy``, else ``Fcl_BRW_Fun``: both lift the brows)
-> brow_raised, ``Fcl_BRW_Sorrow`` (the troubled brow, as MMD's 困る) -> brow_lowered.

Each target has a list of *recipes* in order of preference; a recipe is one or more
``(shape key name, weight)`` pairs that must all exist on the same mesh. Separate left /
right recipes win over a "both" recipe (``BOTH_RECIPES``); a both-morph then serves the
two sides with weight 0.5 each, so equal left and right sliders set it to their value.

Choices for the MakeHuman expression units (the units have no exact anime counterpart):
eye-*-slit -> eye_unimpressed, eye-*-opened-up -> eye_surprised; eyebrows-*-down ->
brow_lowered; brow_angry = eyebrows-*-down + 0.7 eyebrows-*-extern-up (inner ends down,
outer ends up: the anime frown; MakeHuman has no frown unit of its own); eyebrows-*-up (else eyebrows-*-extern-up) -> brow_raised; mouth-open -> mouth_a;
mouth_e = 0.5 open + 0.5 retraction, mouth_i = retraction, mouth_o = 0.6 open + 0.6
pursing, mouth_u = pursing. ARKit "Left" is the face's own left, as on MakeHuman.
"""

import re
import unicodedata

from ...models.pose_vector import (
    MOUTH_NAMES,
    PAIRED_SEMANTICS,
)

#: VRoid's face keys (``Fcl_<group>_<name>``), which some exports prefix with the mesh
#: and material (``Face.M_F00_000_00_Fcl_BRW_Angry``): the prefix is dropped
_VROID_KEY = re.compile(r"fcl_(?:all|brw|eye|mth|ha|hair)_", re.IGNORECASE)


def normalise_name(name: str) -> str:
    text = unicodedata.normalize("NFKC", name).strip().lower()
    text = re.sub(r"\.\d{3}$", "", text)
    vroid = _VROID_KEY.search(text)
    if vroid:
        text = text[vroid.start() :]
    return re.sub(r"[\s_\-.]+", "", text)


def _one(*names):
    """Recipes made of a single key each, weight 1."""
    return [((n, 1.0),) for n in names]


# --- left / right recipes: {semantic: {"l": [...], "r": [...]}} -------------------------
SIDE_RECIPES = {
    "eye_closed": {
        "l": _one(
            "ウィンク",
            "ウインク",
            "ウィンク2",
            "ウインク2",
            "なごみ左",
            "ウィンク左",
            "blinkLeft",
            "Blink_L",
            "eyeBlinkLeft",
            "eyeBlink_L",
            "Fcl_EYE_Close_L",
            "eye-left-closure",
            "eye closed left",
            "eyes closed left",
            "wink left",
            "blink left",
        ),
        "r": _one(
            "ウィンク右",
            "ウインク右",
            "なごみ右",
            "ウィンク2右",
            "ウインク2右",
            "2右",
            "blinkRight",
            "Blink_R",
            "eyeBlinkRight",
            "eyeBlink_R",
            "Fcl_EYE_Close_R",
            "eye-right-closure",
            "eye closed right",
            "eyes closed right",
            "wink right",
            "blink right",
        ),
    },
    "eye_unimpressed": {
        "l": _one(
            "じと目左",
            "ジト目左",
            "半目左",
            "eyeSquintLeft",
            "eye-left-slit",
            "eye half left",
            "eye unimpressed left",
        ),
        "r": _one(
            "じと目右",
            "ジト目右",
            "半目右",
            "eyeSquintRight",
            "eye-right-slit",
            "eye half right",
            "eye unimpressed right",
        ),
    },
    "eye_surprised": {
        "l": _one(
            "びっくり左",
            "びっくり2左",
            "eyeWideLeft",
            "Fcl_EYE_Surprised_L",
            "eye-left-opened-up",
            "eye surprised left",
            "eye wide left",
        ),
        "r": _one(
            "びっくり右",
            "びっくり2右",
            "eyeWideRight",
            "Fcl_EYE_Surprised_R",
            "eye-right-opened-up",
            "eye surprised right",
            "eye wide right",
        ),
    },
    "brow_angry": {
        "l": _one(
            "怒り左",
            "怒り眉左",
            "怒りL",
            "Fcl_BRW_Angry_L",
            "browDownLeft",
            "brow angry left",
        )
        + [(("eyebrows-left-down", 1.0), ("eyebrows-left-extern-up", 0.7))],
        "r": _one(
            "怒り右",
            "怒り眉右",
            "怒りR",
            "Fcl_BRW_Angry_R",
            "browDownRight",
            "brow angry right",
        )
        + [(("eyebrows-right-down", 1.0), ("eyebrows-right-extern-up", 0.7))],
    },
    "brow_raised": {
        "l": _one(
            "上左",
            "上L",
            "Fcl_BRW_Surprised_L",
            "browOuterUpLeft",
            "eyebrows-left-up",
            "eyebrows-left-extern-up",
            "brow raised left",
            "brow up left",
        ),
        "r": _one(
            "上右",
            "上R",
            "Fcl_BRW_Surprised_R",
            "browOuterUpRight",
            "eyebrows-right-up",
            "eyebrows-right-extern-up",
            "brow raised right",
            "brow up right",
        ),
    },
    "brow_lowered": {
        "l": _one(
            "困るL",
            "下L",
            "困る左",
            "下左",
            "Fcl_BRW_Sorrow_L",
            "browDownLeft",
            "eyebrows-left-down",
            "brow lowered left",
            "brow down left",
        ),
        "r": _one(
            "困る右",
            "下R",
            "下右",
            "困るR",
            "Fcl_BRW_Sorrow_R",
            "browDownRight",
            "eyebrows-right-down",
            "brow lowered right",
            "brow down right",
        ),
    },
}

# --- "both" recipes: one morph for the two sides ------------------------------------------
BOTH_RECIPES = {
    "eye_closed": _one(
        "まばたき", "笑い", "なごみ", "blink", "Fcl_EYE_Close", "eyes closed", "eye closed"
    ),
    "eye_unimpressed": _one("半目", "じと目", "ジト目", "eyes half", "eye unimpressed"),
    "eye_surprised": _one(
        "びっくり2",
        "びっくり",
        "驚き",
        "Fcl_EYE_Surprised",
        "surprised",
        "eyes wide",
        "eye surprised",
    ),
    "brow_angry": _one("怒り眉", "怒り2", "怒り", "Fcl_BRW_Angry", "angry", "brow angry"),
    "brow_raised": _one(
        "上",
        "Fcl_BRW_Surprised",
        "Fcl_BRW_Joy",
        "Fcl_BRW_Fun",
        "browInnerUp",
        "brow raised",
        "brows up",
    ),
    "brow_lowered": _one("下", "困る", "Fcl_BRW_Sorrow", "sad", "brow lowered", "brows down"),
}

# --- mouth recipes ----------------------------------------------------------------------
MOUTH_RECIPES = {
    "mouth_a": _one(
        "あ",
        "ああ",
        "あ2",
        "aa",
        "A",
        "Fcl_MTH_A",
        "vrc.v_aa",
        "jawOpen",
        "mouth-open",
        "mouth a",
        "mouth open",
    ),
    "mouth_e": _one("え", "ええ", "え2", "ee", "E", "Fcl_MTH_E", "vrc.v_e", "mouth e")
    + [(("mouth-open", 0.5), ("mouth-retraction", 0.5))],
    "mouth_i": _one(
        "い", "いい", "い2", "ih", "I", "Fcl_MTH_I", "vrc.v_ih", "mouth i", "mouth-retraction"
    )
    + [(("mouthStretchLeft", 1.0), ("mouthStretchRight", 1.0))],
    "mouth_o": _one("お", "おお", "oh", "O", "Fcl_MTH_O", "vrc.v_oh", "mouthFunnel", "mouth o")
    + [(("mouth-open", 0.6), ("mouth-pursing", 0.6))],
    "mouth_u": _one(
        "う", "うう", "ou", "U", "Fcl_MTH_U", "vrc.v_ou", "mouthPucker", "mouth u", "mouth-pursing"
    ),
}


def _match(recipe, available: dict) -> list | None:
    """[(key name, weight), ...] when every key of the recipe exists, else None."""
    found = []
    for name, weight in recipe:
        key = available.get(normalise_name(name))
        if key is None:
            return None
        found.append((key, weight))
    return found


def _first(recipes, available):
    for recipe in recipes:
        found = _match(recipe, available)
        if found:
            return found
    return None


def match_key_names(key_names) -> dict:
    """{target: [(key name, weight), ...]} for one mesh's shape-key names.

    Targets the mesh cannot express are absent. The first key with a given normalised
    name wins (``ウィンク`` before ``ウィンク.001``).
    """
    available = {}
    for name in key_names:
        available.setdefault(normalise_name(name), name)
    result = {}
    for semantic in PAIRED_SEMANTICS:
        left = _first(SIDE_RECIPES[semantic]["l"], available)
        right = _first(SIDE_RECIPES[semantic]["r"], available)
        both = _first(BOTH_RECIPES[semantic], available)
        if left and right:
            result[f"{semantic}_l"], result[f"{semantic}_r"] = left, right
        elif both:
            half = [(key, weight * 0.5) for key, weight in both]
            result[f"{semantic}_l"], result[f"{semantic}_r"] = half, list(half)
        elif left or right:
            result[f"{semantic}_{'l' if left else 'r'}"] = left or right
    for target in MOUTH_NAMES:
        found = _first(MOUTH_RECIPES[target], available)
        if found:
            result[target] = found
    return result
