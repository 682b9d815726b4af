"""One reader per HEST source part; each turns one file into one SpatialData element."""
