"""soak: stability and soak testing for LLM inference on OpenCL GPUs."""

__version__ = "0.1.0"
