"""Layer 2: kernel knowledge, written once over any Target."""
