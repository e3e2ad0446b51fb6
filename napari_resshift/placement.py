"""Where an upscaled output sits on its input: the half-pixel offset of a model's HR pixel grid, the one rule the
napari layers and the pipeline's OME metadata both place an output by.
"""
from __future__ import annotations


def hr_offset(k: int) -> float:
    """Where HR pixel 0's centre sits, in LR pixels from LR pixel 0's centre, for a model of scale ``k``.

    LR pixel i covers HR pixels k·i … k·i+k−1, whose mean centre is k·i + (k−1)/2: pixel centres of each HR block
    average to their LR pixel's centre. So on a spatial axis of scale s and translation t the output has scale s/k
    and translation t + s·hr_offset(k) = t − s·(k−1)/(2k); k = 1 (an LR-sized result) is the input's own placement.
    """
    return -(k - 1) / (2 * k)
