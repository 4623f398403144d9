"""Passes over ATen-level ``torch.fx`` graphs, one per file."""
