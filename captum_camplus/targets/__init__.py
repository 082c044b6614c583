"""Model outputs beyond classification, as ``(N, B)`` scores for Captum's ``target``."""

from ._detection import DetectionScores

__all__ = ["DetectionScores"]
