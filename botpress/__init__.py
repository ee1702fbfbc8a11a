"""Botpress runtime API client."""
