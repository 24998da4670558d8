"""kdlgdb: the wait-for graph of a Linux kernel from a vmcore or a live gdbstub."""

__version__ = "0.1.0"
