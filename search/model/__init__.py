"""The model: the open_clip encoder, its ONNX text tower, picture decoding, and the limit on model work at once."""
