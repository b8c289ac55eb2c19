"""Using a trained model: bundles (write, verify, load), the runtime every predictor shares, and export.

``fashattr.deploy.bundle`` writes and verifies bundle folders; ``fashattr.deploy.runtime.Runtime`` is
the one inference path (``predict``, serving and catalog tagging call it). Submodules are imported on
use, so importing this package costs nothing.
"""
