"""Correctness tools: finite-difference gradient checks and comparisons with reference frameworks.

torch and keras are imported lazily by the tools that need them.
"""

from .gradcheck import GradcheckError, gradcheck
from .compare import ComparisonReport, compare
from .training import TrainingComparison, compare_training
