"""``tlx export``: TorchScript, ONNX and .pt2 artifacts with metadata and a manifest."""
