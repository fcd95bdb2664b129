"""The proxy's cheaper wire helpers give what the slow standard ones give: the fast PNG is
lossless, and the base64 form (un)quoting equals ``urllib.parse``'s on any input."""

from __future__ import annotations

import base64
from urllib.parse import quote_plus, unquote_plus

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blackbox_dft.adapters.remote.wire import decode_image, encode_image, quote_b64, unquote_form

# characters that exercise every branch: base64's, escapes in both cases, a bare "+",
# other escapes, a stray "%", non-ASCII
_ALPHABET = "AZaz09+/=%2bBF3dD ~_.-\xe9"


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=24))
def test_unquote_form_equals_unquote_plus(text: str) -> None:
    raw = text.encode("latin-1")
    assert unquote_form(raw) == unquote_plus(raw.decode("ascii", "replace"))


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=24))
def test_quote_b64_equals_quote_plus(text: str) -> None:
    assert quote_b64(text) == quote_plus(text)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=600))
def test_an_image_field_round_trips(data: bytes) -> None:
    text = base64.b64encode(data).decode()
    assert unquote_form(quote_b64(text).encode()) == text


def test_the_fast_png_is_lossless_and_the_default_bytes_are_unchanged() -> None:
    rng = np.random.default_rng(0)
    flat = np.full((40, 30, 3), 128, np.uint8)
    noisy = rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)
    smooth = np.clip(np.cumsum(rng.integers(-2, 3, (64, 64, 3)), axis=1) + 128, 0, 255)
    for image in (flat, noisy, smooth.astype(np.uint8), noisy[:1, :1]):
        for mode in ("fast", "stored"):
            data = encode_image(image, "png", png=mode)
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
            assert np.array_equal(decode_image(data), image)
        # the HTTP client's bytes (the default) stay what they were: zlib level 1, adaptive
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        assert encode_image(image) == cv2.imencode(".png", bgr,
                                                   [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()
    assert len(encode_image(flat, "png", png="fast")) < 400  # runs still compress
    # stored: the pixels as they are, plus one filter byte per row and the PNG/zlib framing
    assert flat.size < len(encode_image(flat, "png", png="stored")) < flat.size + 40 + 200
    with pytest.raises(ValueError, match="png must be one of client, fast, stored, got 'zip'"):
        encode_image(flat, "png", png="zip")
