"""Structured-dropout regularizers, faithful to their papers, behind one API (see :class:`Regularizer`)."""
from . import functional
from .base import Regularizer
from .disout import Disout
from .dropblock import DropBlock2d, DropBlock3d, ProbDropBlock2d
from .dropcluster import DropCluster
from .dropout import Dropout
from .droppath import DropPath
from .multisample import MultiSampleDropout
from .registry import REGISTRY, MethodSpec, Param
from .scheduler import LinearScheduler

__all__ = ["functional", "Regularizer", "Dropout", "DropPath", "DropBlock2d", "DropBlock3d", "ProbDropBlock2d",
           "Disout", "DropCluster", "MultiSampleDropout", "LinearScheduler", "REGISTRY", "MethodSpec", "Param"]
