"""Sample pipelines, augmentation presets and the physical invariances they are checked against."""
