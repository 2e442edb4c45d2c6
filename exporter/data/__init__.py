"""Datasets (CIFAR-10, image folders, synthetic shapes) and the images they feed."""
