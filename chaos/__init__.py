"""The chaos run (``make chaos``): proof that nothing is lost, doubled or reordered under faults."""
