"""``tlx export``: TorchScript, ONNX and .pt2 artifacts with metadata and a manifest."""

from exporter.export.export import ExportResult, export_run

__all__ = ["ExportResult", "export_run"]
