"""tlx: turn a pretrained VGG16 into verified, benchmarked production artifacts."""

__version__ = "0.1.0"
