"""rnnkit: recurrent sequence models for ciphers, language models, tagging and translation."""

__version__ = "0.1.0"


def load(directory, device: str = "cpu", data_dir=None, backend: str = "torch"):
    """Load a trained model directory; ``.predict([...])`` then takes a batch of raw inputs.

    ``backend="onnx"`` runs the network in onnxruntime (cipher, tag, classify, translate; the
    same answers, see :mod:`rnnkit.backends`); ``"torch"``, the default, in PyTorch."""
    from rnnkit.tasks import load_task

    return load_task(directory, device=device, data_dir=data_dir, backend=backend)


__all__ = ["__version__", "load"]
