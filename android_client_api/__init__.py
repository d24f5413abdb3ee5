"""OpenAI-compatible HTTP API for phones and browsers (later issue)."""
