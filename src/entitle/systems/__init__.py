"""Installations ("systems") registered to one organization (R-AX-1), online or offline (R-AX-11)."""
