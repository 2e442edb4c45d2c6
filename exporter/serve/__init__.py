"""Serving: the predictor behind ``tlx predict`` and ``exporter.load``; the artifact choice."""
