"""rnnkit: recurrent sequence models for ciphers, language models, tagging and translation."""

__version__ = "0.1.0"


def load(directory, device: str = "cpu", data_dir=None):
    """Load a trained model directory; ``.predict([...])`` then takes a batch of raw inputs."""
    from rnnkit.tasks import load_task

    return load_task(directory, device=device, data_dir=data_dir)


__all__ = ["__version__", "load"]
