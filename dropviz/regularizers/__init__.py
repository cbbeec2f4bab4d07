"""Structured-dropout regularizers, faithful to their papers, behind one API (see :class:`Regularizer`)."""
from . import functional
from .base import Regularizer
from .dropout import Dropout
from .registry import REGISTRY, MethodSpec, Param

__all__ = ["functional", "Regularizer", "Dropout", "REGISTRY", "MethodSpec", "Param"]
