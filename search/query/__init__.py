"""Answering queries over a loaded bundle: the engine, retrieval, ranking, search options and filters, keyword
fusion, and the Qdrant index."""
