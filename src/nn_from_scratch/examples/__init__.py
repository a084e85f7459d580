"""The seed's example models, kept for its notebooks."""
