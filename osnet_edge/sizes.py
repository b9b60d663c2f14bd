"""OSNet geometry without torch: channels per width multiplier, input size per resolution.

Kept apart from ``osnet_edge.models`` so that command lines can validate ``--width`` and
``--res`` (and list the valid values) before importing torch, which takes seconds.
"""
from __future__ import annotations

import warnings

from .notices import OddInputSizeWarning

BASE_CHANNELS = (64, 256, 384, 512)   # conv1, conv2, conv3, conv4 at width 1.0 (paper, Table 1)
BASE_INPUT_SIZE = (256, 128)          # (H, W) at res 1.0
PUBLISHED_WIDTHS = (1.0, 0.75, 0.5, 0.25)   # torchreid's model zoo: trained checkpoints exist
# conv1 (stride 2), maxpool (2) and the transition pools after conv2 and conv3 (2 each): the
# last stage sees the input downsampled 16x. Sizes that divide by 16 keep every pixel.
NETWORK_STRIDE = 16
MIN_INPUT_SIDE = 32                   # a 2x2 feature map at the least
EVEN_RESOLUTIONS = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)   # multiples of 1/8: sizes divisible by 16


def scaled_channels(width: float) -> tuple[int, int, int, int]:
    """Channels of conv1..conv4 for a width multiplier; must give whole channels.

    Bottleneck mid channels are out/4 and the gate reduces them by 16, so every stage
    width must be a positive multiple of 4 and its quarter at least 16 to keep the gate.
    """
    if not isinstance(width, (int, float)) or isinstance(width, bool) or not width > 0:
        raise ValueError(f"width multiplier must be a positive number, got {width!r}")
    channels = []
    for base in BASE_CHANNELS:
        c = base * width
        if abs(c - round(c)) > 1e-6:
            raise ValueError(f"width {width} gives {c:g} channels for base {base}: not a whole number")
        channels.append(int(round(c)))
    if any(c % 4 for c in channels[1:]) or min(channels[1:]) // 4 < 16:
        raise ValueError(f"width {width} gives stage channels {channels[1:]}: each must be a multiple "
                         "of 4 with at least 64 channels (bottleneck /4, gate /16)")
    return tuple(channels)  # type: ignore[return-value]


def input_size(res: float) -> tuple[int, int]:
    """Input (H, W) for a resolution multiplier on the 256x128 base, e.g. 0.5 -> (128, 64)."""
    if not isinstance(res, (int, float)) or isinstance(res, bool) or not res > 0:
        raise ValueError(f"resolution multiplier must be a positive number, got {res!r}")
    h, w = round(BASE_INPUT_SIZE[0] * res), round(BASE_INPUT_SIZE[1] * res)
    if h < MIN_INPUT_SIDE or w < MIN_INPUT_SIDE:
        raise ValueError(f"res {res} gives input {h}x{w}: OSNet downsamples by {NETWORK_STRIDE}, need at least "
                         f"{MIN_INPUT_SIDE}x{MIN_INPUT_SIDE}")
    return h, w


def check_width(width: float) -> float:
    """``width`` if OSNet can be built with it, else a ValueError listing the valid widths."""
    try:
        scaled_channels(width)
    except ValueError as exc:
        published = ", ".join(str(w) for w in PUBLISHED_WIDTHS)
        raise ValueError(
            f"--width {width!r} is not a valid OSNet width ({exc}). torchreid publishes widths {published} "
            "(trained checkpoints exist for these); any width w >= 0.25 with 64w whole and 256w, 384w, 512w "
            "multiples of 4 also builds (e.g. 0.375, 0.625, 1.25), with no trained weights") from None
    return float(width)


def check_resolution(res: float, warn: bool = True) -> tuple[int, int]:
    """Input (H, W) of a deployable resolution multiplier (0 < res <= 1, sides >= 32 px), else a
    ValueError listing valid values; warns (:class:`OddInputSizeWarning`) when a side is not a
    multiple of 16, since the pooling then drops the last rows or columns."""
    valid = ", ".join(f"{r} ({round(BASE_INPUT_SIZE[0] * r)}x{round(BASE_INPUT_SIZE[1] * r)})"
                      for r in EVEN_RESOLUTIONS[::-2])
    numeric = isinstance(res, (int, float)) and not isinstance(res, bool)
    if not numeric or not 0 < res <= 1:
        raise ValueError(f"--res {res!r} is out of range: the resolution multiplier on 256x128 must be > 0 and "
                         f"<= 1 (input round(256*res) x round(128*res)), e.g. {valid}")
    try:
        hw = input_size(res)
    except ValueError as exc:
        raise ValueError(f"--res {res!r} is too small ({exc}); the smallest is 0.25 (64x32). "
                         f"Valid e.g. {valid}") from None
    if warn and (hw[0] % NETWORK_STRIDE or hw[1] % NETWORK_STRIDE):
        warnings.warn(
            f"--res {res:g} gives an odd input size {hw[0]}x{hw[1]}: not a multiple of {NETWORK_STRIDE} (the network "
            f"downsamples by {NETWORK_STRIDE} before its last stage, so pooling drops the last rows/columns). "
            f"Sizes that divide evenly: res {', '.join(str(r) for r in EVEN_RESOLUTIONS)} (multiples of 0.125)",
            OddInputSizeWarning, stacklevel=2)
    return hw


__all__ = ["BASE_CHANNELS", "BASE_INPUT_SIZE", "PUBLISHED_WIDTHS", "NETWORK_STRIDE", "MIN_INPUT_SIDE",
           "EVEN_RESOLUTIONS", "scaled_channels", "input_size", "check_width", "check_resolution"]
