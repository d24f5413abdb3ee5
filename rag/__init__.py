"""Private memory over the user's notes (later issue)."""
