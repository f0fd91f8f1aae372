"""The built-in probes, made by code (no image files): a test image of each digit, the
held-out digit among them, a letter-like scribble, noise, and an inverted digit.

Each is the 28 x 28 uint8 input the model sees.  The test images go in as MNIST has them (they
are already MNIST inputs: preprocessing them again would only move them by rounding); the
scribble is drawn large and made into an input by :func:`xdd.probe.image.to_mnist`, as a
drawing would be; the noise and the inverted digit are fed as they are, since that is the point
of them (preprocessing would re-invert the inverted digit).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xdd.probe.image import to_mnist


@dataclass(frozen=True)
class Example:
    name: str  # the button's label
    image: np.ndarray  # (28, 28) uint8, the model's input
    note: str  # one sentence: what it is
    test_row: int | None = None  # its row in the run's scores.npz (a test image), else None


def scribble() -> np.ndarray:
    """A letter-like scribble: a capital A drawn with a thick pen on 200 x 200 paper, made into
    an input as a drawing is.  (28, 28) uint8"""
    from PIL import Image, ImageDraw

    im = Image.new("L", (200, 200), 255)
    pen = ImageDraw.Draw(im)
    for line in (((40, 175), (100, 25)), ((100, 25), (160, 175)), ((65, 115), (135, 115))):
        pen.line(line, fill=0, width=16)
    return to_mnist(np.asarray(im))


def noise(seed: int = 0) -> np.ndarray:
    """Uniform grey-level noise over the whole frame.  (28, 28) uint8"""
    return np.random.default_rng([seed, 5003]).integers(0, 256, size=(28, 28), dtype=np.uint8)


def examples(images: np.ndarray, test_index: np.ndarray, labels: np.ndarray,
             ood_digit: int) -> list[Example]:
    """The built-in probes for a run: its first test image of each digit (the held-out one
    named so), the scribble, noise, and the first in-distribution test image inverted (black on
    white).  images: the run's evaluation set (N, 28, 28) uint8; test_index (T,), labels (T,):
    scores.npz's ``test_index`` and ``label``, the test images the run scored, in its order."""
    out: list[Example] = []
    for d in range(10):
        rows = np.flatnonzero(labels == d)
        if not len(rows):
            continue
        r = int(rows[0])
        held = d == ood_digit
        out.append(Example(f"{d} (held out)" if held else f"{d}",
                           images[int(test_index[r])],
                           f"test image #{int(test_index[r])}, a {d}"
                           + (" — the digit this run held out (OOD)" if held else ""), r))
    out.append(Example("scribble", scribble(), "a letter A, drawn by code: not a digit at all"))
    out.append(Example("noise", noise(), "uniform random grey levels"))
    first_in = next((int(r) for r in np.flatnonzero(labels != ood_digit)), None)
    if first_in is not None:
        out.append(Example("inverted", 255 - images[int(test_index[first_in])],
                           f"test image #{int(test_index[first_in])} (a {int(labels[first_in])}) "
                           "inverted: black digit on white, fed as it is"))
    return out
