"""Help-desk adapters, one self-contained package per help desk, behind ``providers.base``."""

from providers.registry import provider_class

__all__ = ["provider_class"]
