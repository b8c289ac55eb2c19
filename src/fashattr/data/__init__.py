"""Data: tables of labelled images, the image module, readers, cache and batches."""
