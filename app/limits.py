"""How much a frame may cost the web UI server before it is decoded: a pixel bomb (a small file that declares
a huge image, such as a 0.5 MB PNG of 13000x13000 pixels, 507 MB once decoded) is refused from its header.

- `UiSettings.max_frame_pixels` (default `MAX_FRAME_PIXELS`, 4096x4096 = 16.8 megapixels): the largest frame
  a webcam frame or an upload may declare. A webcam frame (a PNG/JPEG/WebP... image sent by the browser or
  an API client) is checked with PIL's header-only `Image.open`; an uploaded image file the same way before
  FFmpeg opens it; an uploaded video by the size its codec declares, after FFmpeg opened it (FFmpeg
  decodes the first frame while opening, one upload at a time, see below) and before any frame is read.
- at most `MAX_DECODES` (2) such decodes and opens run at once, whatever the number of clients; a webcam
  frame is shrunk to `max_side` before it is queued, so the frames waiting for the model stay small.
A refused frame raises `FrameTooLargeError` with the sizes and the bound; the session and its chat stay.

Not here: decoding video files (`streamer/video/decode_*.py`), the page (`app/ui.py`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from streamer.errors import StreamerError
from streamer.frames import resize_max_side

MAX_FRAME_PIXELS = 4096 * 4096  # largest frame decoded (16.8 megapixels: 4K video fits, a 13000x13000 PNG does not)
MAX_DECODES = 2  # webcam frames decoded and uploads opened at once, over all sessions
_decodes = threading.BoundedSemaphore(MAX_DECODES)
# PIL warns about images over 89 megapixels as it opens them; this app refuses them itself, far below that
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class FrameTooLargeError(StreamerError):
    """A frame declares more pixels than the server decodes."""


def decoding() -> contextlib.AbstractContextManager:
    """Hold one of the `MAX_DECODES` decode slots (waits for a free one)."""
    return _decodes


def check_size(width: int | None, height: int | None, limit: int, what: str) -> None:
    """Raise FrameTooLargeError when a `width` x `height` frame has more than `limit` pixels."""
    if width and height and width * height > limit:
        raise FrameTooLargeError(
            f"{what} is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels); this server decodes at "
            f"most {limit / 1e6:.1f} megapixels per frame (e.g. {_side(limit)}x{_side(limit)}): send it smaller")


def open_upload(path: str | Path, name: str, limit: int):
    """Open an uploaded file as a video source (one file: no playlist, no URL), refusing a frame of more than
    `limit` pixels from its header; raises StreamerError naming the file as `name` (the server's upload folder is
    none of the user's business)."""
    from streamer.frames import open_source  # the decoders: only once an upload comes

    source = None
    try:
        with decoding():  # FFmpeg decodes the first frame while it opens the file: one at a time
            check_image_file(path, limit, name)  # an image's size from its header, before FFmpeg
            source = open_source(path, single_file=True)
        check_size(source.width, source.height, limit, name)  # a video's size, as its codec declares it
        return source
    except StreamerError as err:
        if source is not None:
            source.close()
        raise type(err)(str(err).replace(str(path), name)) from None


def check_image_file(path: str | Path, limit: int, what: str) -> None:
    """Refuse an image file that declares too many pixels, from its header; a file PIL does not know as an
    image (a video) passes, for FFmpeg to judge."""
    try:
        with Image.open(path) as image:  # reads the header only
            size = image.size
    except Image.DecompressionBombError as err:  # PIL's own limit, far above ours
        raise FrameTooLargeError(f"{what} is too large to decode ({err})") from None
    except (OSError, ValueError, SyntaxError):  # not an image (PIL raises SyntaxError for some broken headers)
        return
    check_size(*size, limit, what)


def decode_frame(payload: dict, limit: int, max_side: int) -> np.ndarray:
    """A webcam frame as Gradio's `FileData` sends it (a `data:` URL or a file in Gradio's cache) -> (H, W, 3)
    uint8 RGB with its longer side at most `max_side`. Its size is checked from the header before decoding.
    Raises FrameTooLargeError, or ValueError for data that is not an image."""
    url, path = payload.get("url") or "", payload.get("path")
    try:
        data = io.BytesIO(base64.b64decode(url.partition(",")[2], validate=True)) if url.startswith("data:") else path
        if data is None:
            raise ValueError("no image data")
        with Image.open(data) as image:  # reads the header only
            check_size(*image.size, limit, "this webcam frame")
            with _decodes:
                image.draft("RGB", (max_side, max_side))  # a JPEG decodes at 1/2, 1/4 or 1/8 scale when that suffices
                array = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except Image.DecompressionBombError as err:
        raise FrameTooLargeError(f"this webcam frame is too large to decode ({err})") from None
    except (OSError, SyntaxError, binascii.Error) as err:
        raise ValueError(f"not a readable image: {err}") from None
    return resize_max_side(array, max_side)


def _side(pixels: int) -> int:
    return int(pixels**0.5)
