"""Reading and writing micrographs, masks and tables."""
