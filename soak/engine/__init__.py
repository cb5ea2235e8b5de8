"""Engines: native libraries through the C ABI, and pip MNN."""
