"""Built-in ONNX-level passes (entry-point group ``accelc.onnx_passes``)."""
