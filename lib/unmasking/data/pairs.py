"""What every source produces: masked/unmasked pairs, the rejections with their reasons, and the pair checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unmasking import masks

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = [
    "pair_id", "split", "identity", "mask", "source_masked", "source_unmasked",
    "masked_file", "unmasked_file", "masked_sha256", "unmasked_sha256", "mask_coverage",
]


class DataError(RuntimeError):
    """The data stage cannot go on; the message says what to do."""


class CredentialsError(DataError):
    """No Kaggle credentials were found."""


@dataclass
class Pair:
    """One masked/unmasked pair, already cropped and resized."""

    masked: np.ndarray
    unmasked: np.ndarray
    source_masked: str
    source_unmasked: str
    identity: str = ""
    mask: str = ""


@dataclass
class Collected:
    """What a source produced: the usable pairs, in the seeded order, and everything it did not use."""

    pairs: list[Pair] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    found: int = 0
    tried: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def reject(self, file: str, reason: str, detail: str = "") -> None:
        self.rejected.append({"file": file, "reason": reason, "detail": detail})


def coverage(pair: Pair) -> float:
    """Share of the pixels that the mask changes (where masked and unmasked differ)."""
    return float(masks.difference_mask(pair.masked, pair.unmasked).mean())



def reason_category(reason: str) -> str:
    for key in ("empty file", "not an image", "truncated or corrupt", "too small", "over the", "decompression bomb",
                "no face found", "does not land"):
        if key in reason:
            return {"over the": "too large", "does not land": "mask outside the crop"}.get(key, key)
    return reason




def check_pair(masked: np.ndarray, unmasked: np.ndarray) -> dict[str, float]:
    """Does a pair differ only inside one mask-shaped region? For the explore stage's sanity check.

    Returns the coverage (share of differing pixels), the share of differing pixels outside the largest connected
    region of differences (dilated by 2 px), and the vertical centre of the differences (0 = top, 1 = bottom).
    A good pair has coverage > 0, ``outside`` near 0 and a centre below the middle.
    """
    import cv2

    diff = masks.difference_mask(masked, unmasked)
    if not diff.any():
        return {"coverage": 0.0, "outside": 0.0, "centre_y": float("nan"), "ok": False}
    n, labels, stats, _ = cv2.connectedComponentsWithStats(diff.astype(np.uint8))
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    blob = cv2.dilate((labels == biggest).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    outside = float((diff & ~blob).sum() / diff.sum())
    centre_y = float(np.nonzero(diff)[0].mean() / diff.shape[0])
    return {"coverage": float(diff.mean()), "outside": outside, "centre_y": centre_y,
            "ok": bool(outside < 0.01 and centre_y > 0.5)}
