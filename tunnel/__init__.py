"""SSH tunnel from a phone to the local API (later issue)."""
