"""Versions and devices, recorded in every run and shown by `convpipe info`."""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from importlib import metadata

from pipelines import __version__


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Versions of Python and the libraries whose behaviour a run depends on (no heavy imports)."""
    return {
        "convpipe": __version__,
        "python": platform.python_version(),
        "keras": package_version("keras"),
        "tensorflow": package_version("tensorflow") or package_version("tensorflow-cpu"),
        "librosa": package_version("librosa"),
        "numpy": package_version("numpy"),
        "scikit-learn": package_version("scikit-learn"),
    }


#: Keras 3's backends and the package each needs.
KERAS_BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch", "numpy": "numpy", "openvino": "openvino"}


def keras_backend_problem() -> str | None:
    """Why `KERAS_BACKEND` cannot work, found without importing Keras; None when it is unset or
    usable. Keras would fail at its first import with a traceback (ModuleNotFoundError, or
    "Unable to import backend")."""
    backend = os.environ.get("KERAS_BACKEND")
    if not backend:
        return None
    if backend not in KERAS_BACKENDS:
        return f"KERAS_BACKEND={backend} is not a Keras backend; use one of {', '.join(KERAS_BACKENDS)}, or unset it."
    if importlib.util.find_spec(KERAS_BACKENDS[backend]) is None:
        return f"KERAS_BACKEND={backend}, but {KERAS_BACKENDS[backend]} is not installed; install it or unset KERAS_BACKEND."
    return None


def keras_backend() -> str:
    """This process' Keras backend: the loaded Keras' own, else `KERAS_BACKEND` (Keras is not
    imported to find it)."""
    keras = sys.modules.get("keras")
    backend = getattr(getattr(keras, "backend", None), "backend", None)  # None while Keras is half imported
    return backend() if callable(backend) else os.environ.get("KERAS_BACKEND", "tensorflow")


def devices() -> dict[str, object]:
    """The Keras backend and the devices it sees (imports the backend)."""
    import keras

    backend = keras.backend.backend()
    info: dict[str, object] = {"backend": backend}
    if backend == "tensorflow":
        import tensorflow as tf

        from pipelines.devices import cpu_flags, precision_policy
        from pipelines.distribution import strategy_support
        from preprocess import ConvpipeError

        info["devices"] = [f"{d.device_type}:{d.name.split(':')[-1]}" for d in tf.config.list_physical_devices()]
        gpus = tf.config.list_physical_devices("GPU")
        info["gpus"] = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
        build = tf.sysconfig.get_build_info()
        info["cuda"] = build.get("cuda_version")
        info["cudnn"] = build.get("cudnn_version")
        try:
            info["mixed_precision"] = precision_policy("mixed", "gpu" if gpus else "cpu", cpu_flags())
        except ConvpipeError:
            info["mixed_precision"] = "not available (no GPU, no CPU bfloat16 instructions)"
        info["strategies"] = strategy_support(len(gpus))
    elif backend == "jax":
        import jax

        info["devices"] = [str(d) for d in jax.devices()]
    return info
