"""This instance: the machine's facts, instance types, the launch context."""
