"""Lantern core: data home, config, model store, engines, batching, conversations, memory and twins.

Front ends (`app.cli`, `tui`, `android_client_api`) call in here; the core calls `rag` and `quantize`.
Only `app.cli` may import a front end; no other module of `app` does.
"""
