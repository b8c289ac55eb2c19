"""The code an exported bundle carries: run a fashattr bundle with only the standard library, NumPy, Pillow
and onnxruntime.

Nothing in this package imports the rest of fashattr (``make test`` checks it with import-linter), because
``fashattr export`` copies the package into every ONNX bundle as ``fashattr_portable/``, beside a
``predict_onnx.py`` that runs it::

    python BUNDLE/predict_onnx.py BUNDLE photo.jpg shop_folder/ [--int8] [--out preds.jsonl]

Inside fashattr the same modules are the one copy of what every path shares, so training, evaluation, the
torch runtime, serving, tagging and a bundle on a machine without fashattr prepare and decode alike:

- :mod:`.errors`: the base error class and the image and bundle errors;
- :mod:`.images`: the one place that opens image files (decode, EXIF, crop, letterbox);
- :mod:`.background`: the optional background-removal step;
- :mod:`.tta`: test-time augmentation views and their logit mean;
- :mod:`.decoding`: logits to answers (logit adjustment, temperatures, thresholds, "unsure");
- :mod:`.bundle`: the bundle format (config.json, hashes.json, the model id, preprocessing from the config);
- :mod:`.onnx_runner`: a bundle's ONNX model in an onnxruntime session, and streaming prediction of files;
- :mod:`.cli`: the ``predict_onnx.py`` command line.
"""
