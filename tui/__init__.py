"""Lantern's terminal app (Textual): app.py, screens/ (one screen per file), widgets/ (one widget per
file) and one stylesheet, lantern.tcss. It imports the app core (app.*, never app.cli) and, to show an
answer's sources, rag's RetrievalHit and is_virtual_root; nothing of android_client_api."""
