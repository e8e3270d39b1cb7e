"""Cross-validation runs, their aggregation and learning-curve studies."""
