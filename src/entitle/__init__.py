"""Entitle: license management for devices and device software."""

__version__ = "0.1.0"
