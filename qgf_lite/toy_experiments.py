"""Moved to :mod:`qgf_lite.toy.experiments`; this alias goes in qgf_lite 0.3."""

from qgf_lite._moved import alias_module

alias_module(__name__, "qgf_lite.toy.experiments")
