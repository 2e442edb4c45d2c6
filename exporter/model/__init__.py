"""VGG16: build, freeze, replace the head, load trained weights."""
