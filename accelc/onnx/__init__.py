"""ONNX export of an optimised graph and the ONNX-level pass API."""
