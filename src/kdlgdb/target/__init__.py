"""Layer 1: the one place that talks to a debugger (or to a recording of one)."""
