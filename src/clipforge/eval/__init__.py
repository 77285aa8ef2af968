"""Evaluation (zero-shot, retrieval, linear probe) and zero-shot applications (classify, caption,
moderate, explain). Import the submodules for the rest; the classifier is re-exported here."""

from .classifier import ZeroShotClassifier

__all__ = ["ZeroShotClassifier"]
