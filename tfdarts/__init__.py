"""tfdarts: differentiable architecture search (DARTS) in TensorFlow/Keras."""

__version__ = "0.1.0"
