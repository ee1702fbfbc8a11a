"""The REST transport: authenticate, validate, translate, call one service."""
