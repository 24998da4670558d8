"""Front ends: the gdb commands, the crash bridge, the command line."""
