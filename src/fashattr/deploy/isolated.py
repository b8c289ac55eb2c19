"""An environment that holds only what a bundle's ``predict_onnx.py`` needs, to prove it stands alone.

The venv has no pip and no system site-packages; onnxruntime, NumPy and Pillow are linked from
the current environment's site-packages (nothing is downloaded, so it works offline). Neither
torch, timm, onnx, PyYAML nor fashattr can be imported there, which :func:`onnx_only_venv` checks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# What predict_onnx.py imports beyond the standard library (and the folders of their shared libraries).
STANDALONE_PACKAGES = ("numpy", "numpy.libs", "PIL", "pillow.libs", "onnxruntime")
TRAINING_STACK = ("torch", "timm", "fashattr", "onnx", "yaml")


def onnx_only_venv(where: str | Path) -> Path:
    """Create a venv at ``where`` holding only onnxruntime, NumPy and Pillow; its python.

    Raises:
        RuntimeError: a package of the training stack is importable there after all.
    """
    import numpy as np

    where = Path(where)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    probe = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.run([python, "-c", probe], check=True, capture_output=True, text=True).stdout.strip())
    ours = Path(np.__file__).parent.parent  # the site-packages folder this environment imports from
    for name in STANDALONE_PACKAGES:
        if (ours / name).exists():
            (site / name).symlink_to(ours / name)
    probe = f"import importlib.util as u; print([m for m in {TRAINING_STACK} if u.find_spec(m)])"
    found = subprocess.run([python, "-c", probe], check=True, capture_output=True, text=True, cwd=where).stdout
    if found.strip() != "[]":
        raise RuntimeError(f"{where}: expected none of {TRAINING_STACK} to be importable, found {found.strip()}")
    return python


def run_standalone(
    python: str | Path, bundle: str | Path, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run ``BUNDLE/predict_onnx.py BUNDLE ARGS...`` with ``python``, from outside any source tree,
    with a bare environment (PATH and HOME only)."""
    bundle = Path(bundle)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [str(python), str(bundle / "predict_onnx.py"), str(bundle), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=bundle.parent,
        timeout=timeout,
    )
