"""Label schema v1 (see README and docs/architecture.md)."""

from __future__ import annotations

__all__ = [
    "BACKGROUND", "FEMORAL_HEAD_LEFT", "ACETABULUM_LEFT", "FEMORAL_HEAD_RIGHT",
    "ACETABULUM_RIGHT", "OTHER_BONE", "LABEL_NAMES", "SIDE_LABELS",
    "HEAD_MARGIN_MM", "ACETABULUM_RADIUS_FACTOR", "SCHEMA_VERSION",
]

SCHEMA_VERSION = 1

BACKGROUND = 0
FEMORAL_HEAD_LEFT = 1
ACETABULUM_LEFT = 2
FEMORAL_HEAD_RIGHT = 3
ACETABULUM_RIGHT = 4
OTHER_BONE = 5

#: value -> name, in the order of the schema table.
LABEL_NAMES = {
    BACKGROUND: "background",
    FEMORAL_HEAD_LEFT: "femoral_head_left",
    ACETABULUM_LEFT: "acetabulum_left",
    FEMORAL_HEAD_RIGHT: "femoral_head_right",
    ACETABULUM_RIGHT: "acetabulum_right",
    OTHER_BONE: "other_bone",
}

#: patient side -> (femoral head label, acetabulum label).
SIDE_LABELS = {
    "left": (FEMORAL_HEAD_LEFT, ACETABULUM_LEFT),
    "right": (FEMORAL_HEAD_RIGHT, ACETABULUM_RIGHT),
}

#: Femur bone within the fitted head sphere grown by this margin is "femoral head".
HEAD_MARGIN_MM = 2.0
#: Pelvic bone within this factor times the head radius of the head centre is "acetabulum".
ACETABULUM_RADIUS_FACTOR = 1.5
