"""Reading and writing image and label files (TIFF, PNG, ...), atomically."""
