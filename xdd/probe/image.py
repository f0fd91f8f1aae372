"""A picture made into an MNIST-like input, the way MNIST itself was made (pure numpy and PIL).

MNIST (LeCun et al.): NIST's black-and-white digits were scaled to fit a 20 x 20 box keeping
their aspect ratio (the anti-aliasing of the scaling makes the grey levels), then placed in a
28 x 28 frame so that their centre of mass lies at the centre of the frame.  White digit on
black: 0 is background, 255 full ink.

:func:`to_mnist` does the same to a grey image of any size and polarity:

1. **polarity**: the background is the median of the border pixels; a light background
   (dark-on-light, a drawing on paper) is inverted;
2. **ink**: grey level minus the background level, clipped at 0 and stretched so that the
   strongest ink is 255 (a pencil line on grey paper becomes a full stroke); an image with less
   than :data:`MIN_CONTRAST` grey levels of ink is blank (:class:`ProbeInputError`);
3. **crop** to the bounding box of the ink (pixels above :data:`INK_THRESHOLD` of the max);
4. **scale** the longer side to 20 px, the shorter in proportion (at least 1 px): box
   filter (area average) when shrinking, bilinear when enlarging;
5. **centre**: placed in 28 x 28 so that its centre of mass (grey levels as mass) lands on the
   frame's centre, (13.5, 13.5) in pixel-index coordinates, by a whole-pixel shift rounded
   half up, clamped so that nothing is cut off.

:func:`decode` reads uploaded bytes (PNG or JPEG, any size) and refuses what is not one, or is
too large, with one sentence each; a picture larger than 1,024 px is shrunk to that (area
average) as it is read, since the digit ends up in a 20 px box anyway.
"""
from __future__ import annotations

import io

import numpy as np

BOX = 20  # the digit's bounding box is scaled to fit BOX x BOX
SIZE = 28  # the frame
CENTRE = (SIZE - 1) / 2.0  # 13.5: the frame's centre in pixel-index coordinates
MIN_CONTRAST = 8  # grey levels of ink below which an image is blank
INK_THRESHOLD = 0.1  # a pixel is ink (for the crop) above this fraction of the strongest ink
MAX_BYTES = 20 * 2**20  # an upload larger than this is refused (20 MiB)
MAX_SIDE = 10_000  # an image wider or taller than this is refused (px)
WORK_SIDE = 1024  # a larger picture is shrunk to this (area average) as it is decoded


class ProbeInputError(ValueError):
    """An input that cannot be probed; the message is one sentence for the visitor."""


def grey(img: np.ndarray) -> np.ndarray:
    """Grey levels (H, W) float64 in [0, 255] of a grey (H, W), RGB (H, W, 3) or RGBA
    (H, W, 4) uint8 image; transparent pixels are white (a drawing on a transparent canvas is
    ink on paper).  Luminance weights: ITU-R 601, as PIL's "L" mode."""
    a = np.asarray(img)
    if a.ndim == 2:
        return a.astype(np.float64)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ProbeInputError(f"an image must be grey, RGB or RGBA; got shape {a.shape}")
    rgb = a[..., :3].astype(np.float64)
    lum = rgb @ np.array([0.299, 0.587, 0.114])  # (H, W)
    if a.shape[2] == 4:
        alpha = a[..., 3].astype(np.float64) / 255.0
        lum = alpha * lum + (1.0 - alpha) * 255.0
    return lum


def ink(g: np.ndarray) -> np.ndarray:
    """The ink of a grey image (H, W) in [0, 255]: white-on-black, background 0, strongest
    ink 255 (float64).  Raises ProbeInputError for a blank (single-tone) image."""
    g = np.asarray(g, dtype=np.float64)
    if g.ndim != 2 or min(g.shape) < 1:
        raise ProbeInputError("the image is empty")
    border = np.concatenate([g[0], g[-1], g[1:-1, 0], g[1:-1, -1]])
    background = float(np.median(border))
    if background > 127.5:  # dark ink on a light background: invert
        g, background = 255.0 - g, 255.0 - background
    out = np.clip(g - background, 0.0, None)
    peak = float(out.max())
    if peak < MIN_CONTRAST:
        raise ProbeInputError("the image is blank: it is a single tone, with no digit to see")
    return out * (255.0 / peak)


def _resize(a: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    shrink = width <= a.shape[1] and height <= a.shape[0]
    im = Image.fromarray(a.astype(np.float32))
    return np.asarray(im.resize((width, height), Image.Resampling.BOX if shrink
                                else Image.Resampling.BILINEAR), dtype=np.float64)


def centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    """(row, column) of the grey-level mass of a (H, W) in pixel-index coordinates."""
    a = np.asarray(a, dtype=np.float64)
    total = a.sum()
    rows, cols = np.indices(a.shape)
    return float((rows * a).sum() / total), float((cols * a).sum() / total)


def to_mnist(img: np.ndarray) -> np.ndarray:
    """Any image (grey, RGB or RGBA uint8 array; either polarity) as MNIST would have made it:
    (28, 28) uint8, white digit on black, in a 20 x 20 box centred by its centre of mass."""
    a = ink(grey(img))
    rows = np.flatnonzero(a.max(1) > INK_THRESHOLD * 255.0)
    cols = np.flatnonzero(a.max(0) > INK_THRESHOLD * 255.0)
    a = a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # the ink's bounding box
    h, w = a.shape
    scale = BOX / max(h, w)
    a = np.clip(_resize(a, max(1, round(w * scale)), max(1, round(h * scale))), 0.0, 255.0)
    cy, cx = centre_of_mass(a)
    # whole-pixel shift, rounded half up, kept inside the frame
    top = int(np.clip(np.floor(CENTRE - cy + 0.5), 0, SIZE - a.shape[0]))
    left = int(np.clip(np.floor(CENTRE - cx + 0.5), 0, SIZE - a.shape[1]))
    out = np.zeros((SIZE, SIZE), np.float64)
    out[top:top + a.shape[0], left:left + a.shape[1]] = a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def decode(data: bytes) -> np.ndarray:
    """Uploaded bytes as an RGBA uint8 array (H, W, 4), EXIF rotation applied.  Refuses, with
    one sentence each: more than 20 MiB, not a PNG or JPEG image, wider or taller than
    10,000 px, unreadable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if len(data) > MAX_BYTES:
        raise ProbeInputError(f"the file is {len(data) / 2**20:.1f} MB; the limit is "
                              f"{MAX_BYTES // 2**20} MB")
    try:
        im = Image.open(io.BytesIO(data))  # reads the header only
    except (UnidentifiedImageError, OSError, ValueError):
        raise ProbeInputError("the file is not an image that can be read (PNG or JPEG)") from None
    if im.format not in ("PNG", "JPEG"):
        raise ProbeInputError(f"the file is a {im.format or 'unknown'} image; accepted: PNG or "
                              "JPEG")
    if max(im.size) > MAX_SIDE:
        raise ProbeInputError(f"the image is {im.size[0]} x {im.size[1]} px; the limit is "
                              f"{MAX_SIDE:,} px on a side")
    try:
        if im.format == "JPEG":
            im.draft("RGB", (WORK_SIDE, WORK_SIDE))  # decode a large photo at a fraction
        im = ImageOps.exif_transpose(im).convert("RGBA")
        # the digit ends up in a 20 px box: a photo's full resolution only costs memory
        im.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
        return np.asarray(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise ProbeInputError("the image file is damaged and cannot be read") from None
