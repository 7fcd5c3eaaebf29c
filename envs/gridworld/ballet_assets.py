"""What the ballet tasks show and say: dances, dancer shapes and colours, the sprite table and the vocabulary.

The dance move lists, the 15 shapes (9x9 masks), the 19 colours and the wall/agent colours are facts from HCAM's
pycolab Ballet; the code is ours. Every cell of a ballet view holds a *sprite id*: 0 floor, 1 wall, 2 agent, then one
id per (shape, colour) pair. The symbolic view is that id grid; the RGB view looks each id up in ``sprite_table()``.
"""

from __future__ import annotations

import numpy as np

# Compass moves in action order: action a moves the agent by MOVES[a] (row, col); rows grow downward.
DIRECTIONS = ("N", "NE", "E", "SE", "S", "SW", "W", "NW")
MOVES = np.array([(-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1)])

# Ballet's 13 dances of 16 moves each.
DANCES = {
    "circle_cw": "N E S S W W N N E E S S W W N E",
    "circle_ccw": "N W S S E E N N W W S S E E N W",
    "up_and_down": "N S S N N S S N N S S N N S S N",
    "left_and_right": "E W W E E W W E E W W E E W W E",
    "diagonal_uldr": "NW SE SE NW NW SE SE NW NW SE SE NW NW SE SE NW",
    "diagonal_urdl": "NE SW SW NE NE SW SW NE NE SW SW NE NE SW SW NE",
    "plus_cw": "N S E W S N W E N S E W S N W E",
    "plus_ccw": "N S W E S N E W N S W E S N E W",
    "times_cw": "NE SW SE NW SW NE NW SE NE SW SE NW SW NE NW SE",
    "times_ccw": "NW SE SW NE SE NW NE SW NW SE SW NE SE NW NE SW",
    "zee": "NE W W E E SW NE SW SW E E W W NE SW NE",
    "chevron_down": "NW S SE NE N SW NE SW NE S SW NW N SE NW SE",
    "chevron_up": "SE N NW SW S NE SW NE SW N NE SE S NW SE NW",
}
DANCE_NAMES = tuple(DANCES)

# Room Ballet's dances: four-move loops named after the Ballet dance they open (the circles shrunk to a 2x2 loop so
# that every dance ends where it began). Any two differ within their first three moves.
SHORT_DANCES = {
    "circle_cw": "N E S W",
    "circle_ccw": "N W S E",
    "up_and_down": "N S S N",
    "left_and_right": "E W W E",
    "diagonal_uldr": "NW SE SE NW",
    "diagonal_urdl": "NE SW SW NE",
    "plus_cw": "N S E W",
    "plus_ccw": "N S W E",
    "times_cw": "NE SW SE NW",
    "times_ccw": "NW SE SW NE",
}
SHORT_DANCE_NAMES = tuple(SHORT_DANCES)

# Ballet's instruction tokens: 0 while watching, 1 + d once the target is the dancer of dance d.
VOCAB = ("watch",) + DANCE_NAMES

SHAPES = ("triangle", "empty_square", "plus", "inverse_plus", "ex", "inverse_ex", "circle", "empty_circle", "tee",
          "upside_down_tee", "h", "u", "upside_down_u", "vertical_stripes", "horizontal_stripes")
COLOURS = {
    "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "purple": (128, 0, 128),
    "orange": (255, 165, 0), "yellow": (255, 255, 0), "brown": (128, 64, 0), "pink": (255, 64, 255),
    "cyan": (0, 255, 255), "dark_green": (0, 100, 0), "dark_red": (100, 0, 0), "dark_blue": (0, 0, 100),
    "olive": (100, 100, 0), "teal": (0, 100, 100), "lavender": (215, 200, 255), "peach": (255, 210, 170),
    "rose": (255, 205, 230), "light_green": (200, 255, 200), "light_yellow": (255, 255, 200),
}
COLOUR_NAMES = tuple(COLOURS)

CELL = 9  # pixels per grid cell
FLOOR, WALL, AGENT, FIRST_DANCER = 0, 1, 2, 3
NUM_SPRITES = FIRST_DANCER + len(SHAPES) * len(COLOURS)
_BASE_RGB = ((0, 0, 0), (40, 40, 40), (255, 255, 255))  # floor, wall, agent


def dancer_sprite(shape, colour):
    """Sprite id of a dancer; works on ints and on integer arrays or tensors."""
    return FIRST_DANCER + shape * len(COLOURS) + colour


def dance_offsets(dances: dict[str, str]) -> np.ndarray:
    """[num_dances, moves + 1, 2]: a dancer's (row, col) offset from its home after k moves of each dance."""
    steps = np.array([[MOVES[DIRECTIONS.index(m)] for m in seq.split()] for seq in dances.values()])
    start = np.zeros((len(dances), 1, 2), dtype=np.int64)
    return np.concatenate([start, np.cumsum(steps, axis=1)], axis=1)


def shape_mask(name: str) -> np.ndarray:
    """The 9x9 boolean mask of a dancer shape."""
    i, j = np.mgrid[0:CELL, 0:CELL]
    mid = CELL // 2
    bar_v, bar_h = abs(j - mid) <= 1, abs(i - mid) <= 1  # the 3-wide centre column and row
    left, right, top, bottom = j < 3, j >= CELL - 3, i < 3, i >= CELL - 3
    diagonals = (abs(i - j) <= 1) | (abs(CELL - 1 - i - j) <= 1)
    radius2 = (i - mid) ** 2 + (j - mid) ** 2
    masks = {
        "triangle": i >= 2 * abs(j - mid),
        "empty_square": (np.minimum(i, CELL - 1 - i) < 2) | (np.minimum(j, CELL - 1 - j) < 2),
        "plus": bar_v | bar_h,
        "inverse_plus": ~(bar_v | bar_h),
        "ex": diagonals,
        "inverse_ex": ~diagonals,
        "circle": radius2 <= mid ** 2,
        "empty_circle": abs(radius2 - mid ** 2) < 6,
        "tee": bar_v | top,
        "upside_down_tee": bar_v | bottom,
        "h": left | right | bar_h,
        "u": left | right | bottom,
        "upside_down_u": left | right | top,
        "vertical_stripes": j % 2 == 0,
        "horizontal_stripes": i % 2 == 0,
    }
    if name not in masks:
        raise ValueError(f"shape: unknown shape {name!r}; accepted: {', '.join(SHAPES)}")
    return masks[name]


def sprite_table() -> np.ndarray:
    """uint8 [NUM_SPRITES, 9, 9, 3]: the picture of every sprite id."""
    table = np.zeros((NUM_SPRITES, CELL, CELL, 3), dtype=np.uint8)
    for sprite, rgb in enumerate(_BASE_RGB):
        table[sprite] = rgb
    for s, shape in enumerate(SHAPES):
        mask = shape_mask(shape)
        for c, rgb in enumerate(COLOURS.values()):
            table[dancer_sprite(s, c)][mask] = rgb
    return table
