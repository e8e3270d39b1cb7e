"""smalldata_pl: a PyTorch Lightning experiment framework for deep learning on small materials-science data."""

__version__ = "0.1.0"
