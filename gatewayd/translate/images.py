"""Images in a type Gemini reads.

Anthropic takes JPEG, PNG, GIF and WebP; Gemini (both APIs) takes PNG, JPEG, WebP, HEIC and HEIF
and answers 400 "Unsupported MIME type: image/gif". A GIF sent as base64 becomes a PNG of its
first frame (Gemini reads a still image; Anthropic's own vision also reads one frame).

Pillow is imported by the first GIF, not at start: it holds 2 MB resident in a daemon
where most never see a GIF.
"""

import io
import warnings

GEMINI_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
# A GIF larger than this is refused rather than decoded: the conversion runs on the reactor.
MAX_PIXELS = 16_000_000


def gif_to_png(data: bytes) -> bytes:
    """The first frame of the GIF ``data`` as PNG; ValueError if it is not a readable GIF."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=["GIF"]) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise ValueError(f"{image.width}x{image.height} pixels is too large")
                image.seek(0)
                frame = image.convert("RGBA")
    except (OSError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise ValueError(f"not a readable GIF ({error})") from None
    out = io.BytesIO()
    frame.save(out, format="PNG")
    return out.getvalue()
