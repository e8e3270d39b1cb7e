"""torch Datasets and what they are built from: record discovery, splits, leakage signatures, samplers."""
