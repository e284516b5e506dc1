"""The index bundle on disk and its trust checks: manifest, embeddings, metadata, the hnswlib graph, keywords.

Never imports torch, gradio or the build: a bundle is untrusted data, checked here before anything uses it."""
