"""Data: tables of labelled images, readers of the field's layouts, the decode-once cache, batches and augmentation."""
