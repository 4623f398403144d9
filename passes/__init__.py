"""accelc's built-in passes. Each registers through the ``accelc.passes`` entry-point group."""
