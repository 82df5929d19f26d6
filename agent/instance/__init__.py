"""This instance: the IMDSv2 client, the machine's facts, instance types, the launch
context."""
