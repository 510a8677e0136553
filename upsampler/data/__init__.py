"""Data, knowing nothing of the model: image I/O, preprocessing into train/test splits, the built-in demo sets, the official datasets."""
