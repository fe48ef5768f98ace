"""Image files as the model's input: `load_image` reads any picture Pillow
reads, or refuses it in one line. It needs Pillow and NumPy, not TensorFlow,
so the command line checks every file before TensorFlow starts.
"""

import math
import os

import numpy as np

from .checks import check_image_path, check_int, check_positive_int

# The largest picture `load_image` decodes: 50 million pixels (a 48-megapixel
# phone photo fits). Pillow refuses only above 179 million, after a warning.
MAX_PIXELS = 50_000_000


def load_image(path, image_size=32, max_pixels=MAX_PIXELS):
    """Read an image file as the model's input: uint8 `(image_size, image_size, 3)`.

    Any file Pillow reads (PNG, JPEG, WebP, BMP, GIF, TIFF, ...) loads as the
    picture it shows: turned upright as its EXIF orientation says; 16-bit
    greyscale scaled to 8 bits (65535 becomes 255); greyscale, palette and
    CMYK converted to RGB; an alpha channel composited on white; of an
    animation, the first frame. The picture is then resized to `image_size`
    × `image_size` by averaging the pixels each output pixel covers (the
    aspect ratio is not kept: crop first to keep it).

    Returns:
        `(image, note)`: the array, and a sentence saying what was converted
        (empty when the file was already a `image_size`-pixel RGB picture).

    Raises:
        FileNotFoundError: if `path` does not exist.
        IsADirectoryError: if `path` is a directory.
        ValueError: if the file is not an image Pillow can read, is truncated,
            has more than `max_pixels` pixels (checked before decoding), or
            has pixels without a fixed range (32-bit or floating-point); or
            if `max_pixels` is not a positive integer or `image_size` is not
            one whose square is at most `MAX_PIXELS`.
        TypeError: if `path` is not a path.
    """
    import struct
    import warnings

    from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

    path = os.fspath(check_image_path(path))
    check_positive_int("max_pixels", max_pixels)
    check_int("image_size", image_size, 1, math.isqrt(MAX_PIXELS) + 1)
    notes = []
    try:
        with warnings.catch_warnings():  # the size is checked below, before decoding
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            picture = Image.open(path)
        with picture:
            width, height = picture.size
            if width * height > max_pixels:
                raise _Refused(f"{path!r} has {width}×{height} pixels, more than the "
                               f"{max_pixels:,} load_image decodes; shrink it first.")
            frames = getattr(picture, "n_frames", 1)
            if frames > 1:
                notes.append(f"the first of its {frames} frames was used")
            picture.load()
            if picture.getexif().get(ExifTags.Base.Orientation, 1) in range(2, 9):
                picture = ImageOps.exif_transpose(picture)
                notes.append("it was turned upright as its EXIF orientation says")
            image = _rgb(picture, path, notes)
    except _Refused:
        raise
    except Image.DecompressionBombError:  # Pillow's own limit, far above `max_pixels`
        limit = min(max_pixels, 2 * Image.MAX_IMAGE_PIXELS)
        raise ValueError(f"{path!r} has more than the {limit:,} pixels load_image "
                         "decodes; shrink it first.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError, ValueError,
            struct.error) as error:  # Pillow's errors while reading a damaged file
        reason = ("not an image file Pillow can read" if isinstance(error, UnidentifiedImageError)
                  else (str(error).splitlines() or [type(error).__name__])[0])
        raise ValueError(f"{path!r} cannot be read as an image: {reason}.") from None
    if image.size != (image_size, image_size):
        notes.append(f"it was resized from {image.size[0]}×{image.size[1]} to "
                     f"{image_size}×{image_size} pixels")
        image = image.resize((image_size, image_size), Image.Resampling.BOX)
    note = f"{os.path.basename(path)}: {'; '.join(notes)}." if notes else ""
    return np.asarray(image, dtype=np.uint8), note


class _Refused(ValueError):
    """A file `load_image` refuses on its own account (not a Pillow error)."""


def _rgb(picture, path, notes):
    """`picture` as an 8-bit RGB Pillow image, with a note on what changed."""
    from PIL import Image

    mode = picture.mode
    if mode.startswith("I;16") or mode == "I":
        # Pillow reads 16-bit PGM as I, scaled to 0-65535; a TIFF of 32-bit
        # integers (BitsPerSample 32) is I too, with no range to scale from.
        values = np.asarray(picture).astype(np.float64)
        bits = max(getattr(picture, "tag_v2", {}).get(258, (16,)))
        if mode == "I" and (bits > 16 or values.min() < 0 or values.max() > 65535):
            raise _Refused(f"{path!r} has 32-bit pixels ({mode}) without a fixed "
                           "range; save it with 8 or 16 bits per channel.")
        notes.append(f"its 16-bit greyscale ({mode}) was scaled to 8 bits")
        grey = np.round(values * 255 / 65535).astype(np.uint8)
        return Image.fromarray(np.stack([grey] * 3, axis=-1), mode="RGB")
    if mode == "F":
        raise _Refused(f"{path!r} has floating-point pixels (F) without a fixed "
                         "range; save it with 8 or 16 bits per channel.")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in picture.info:
        rgba = picture.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        white.alpha_composite(rgba)
        notes.append(f"its alpha channel ({mode}) was composited on white")
        return white.convert("RGB")
    if mode == "RGB":
        return picture
    try:
        rgb = picture.convert("RGB")
    except ValueError:  # a mode Pillow has no conversion to RGB for
        raise _Refused(f"{path!r} has {mode} pixels, which load_image cannot "
                         "convert to RGB; save it as RGB.") from None
    notes.append(f"its {mode} pixels were converted to RGB")
    return rgb
