"""A run's decoding, fitted and stored: NumPy only, no model is run here.

- :mod:`.temperature`: temperature scaling and reliability (ECE) per group;
- :mod:`.fit`: post-hoc logit adjustment per decoding mode (``accuracy``, ``balanced``), multi-label
  thresholds, and their cross-fitted out-of-fold metrics;
- :mod:`.store`: ``calibration.json`` read back, checked against the weights, and turned into a bundle's
  ``decoding`` block.

``fashattr calibrate RUN`` (:mod:`fashattr.calibrate`) runs the model over the selection split and calls these.
"""
