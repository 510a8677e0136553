"""Tools beside the study: the benchmark."""
