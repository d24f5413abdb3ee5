"""Lantern's HTTP API for phones and browsers: the FastAPI app (app.py), its routers (routes/: OpenAI-
compatible, Lantern's own, the web client), schemas, auth and limits, and the static web client.

It may import the app core (`app.*`), never a front end: not `tui`, not `app.cli`.
"""
