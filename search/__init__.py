"""Semantic image search: CLIP embeddings in an hnswlib index, queried by text, image or item.

Importing this package loads nothing heavy; `search.query.engine.load_engine` loads the model.
"""
