"""Turning an uploaded file into a decoded image, or a 4xx saying why not: not an image (400), too many pixels or a
decompression bomb (413), a format or content type the detector does not take (415)."""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image, UnidentifiedImageError

from ingot.server.errors import APIError, bad_request

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
# What a client may declare for an upload; octet-stream (no type known) is sniffed like the rest.
UPLOAD_TYPES = frozenset({*FORMATS.values(), "image/jpg", "application/octet-stream"})


def unsupported_media(message: str) -> APIError:
    return APIError(415, message, param="image", code="unsupported_media_type")


def too_large(pixels: int, limit: int) -> APIError:
    return APIError(413, f"the image has {pixels} pixels, more than the limit of {limit}", param="image",
                    code="image_too_large")  # fmt: skip


def decode_base64(text: str) -> bytes:
    """Base64 text, or a data URL (``data:image/png;base64,...``)."""
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise bad_request("image: a data URL must be base64-encoded", param="image")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("image: not valid base64", param="image") from None


# Without --max-image-pixels: 4096 x 4096 (16.8 Mpx, so a 12-16 Mpx phone photo fits; its RGB decode is 50 MB), or
# for a detector whose input is larger than 512, (8 x its input side)^2. The letterbox shrinks every image to the
# input size, so pixels beyond that add decoding time and memory, not detail the network sees.
DERIVED_MIN_IMAGE_PIXELS = 4096 * 4096
DERIVED_IMAGE_SIDE_PER_INPUT_SIDE = 8


def image_pixel_limit(input_size: int, configured: int | None) -> int:
    """The most pixels an image sent to a detector with this input size may declare."""
    if configured is not None:
        return configured
    return max(DERIVED_MIN_IMAGE_PIXELS, (DERIVED_IMAGE_SIDE_PER_INPUT_SIDE * input_size) ** 2)


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """The decoded image. Its size is read from the header and refused before any pixel is decompressed; Pillow's
    own decompression-bomb warning counts as a refusal too."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
            raise APIError(413, f"image: {error}", param="image", code="image_too_large") from None
        except (UnidentifiedImageError, OSError, ValueError):
            raise bad_request("image: not an image (JPEG, PNG or WebP)", param="image") from None
        if image.format not in FORMATS:
            raise unsupported_media(f"image: {image.format} images are not supported; send JPEG, PNG or WebP")
        width, height = image.size
        if width * height > max_pixels:
            raise too_large(width * height, max_pixels)
        try:
            image.load()
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
            raise APIError(413, f"image: {error}", param="image", code="image_too_large") from None
        except (OSError, ValueError, SyntaxError):
            raise bad_request("image: the file is truncated or corrupt", param="image") from None
    return image
