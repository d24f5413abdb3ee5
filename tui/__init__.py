"""Textual terminal app."""
