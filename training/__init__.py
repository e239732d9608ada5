"""Training of the detector and the classifier (outside the container image)."""
