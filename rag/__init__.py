"""Private memory over the user's notes: loaders, chunking, the embedder, FAISS and BM25 indexes,
the (optionally encrypted) store, and retrieval with citations.

It may import the core's small utilities (`app.errors`, `app.atomic`), never a front end.
"""
