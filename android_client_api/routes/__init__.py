"""The API's routers, one per concern: OpenAI-compatible, Lantern's own, and the web client."""
