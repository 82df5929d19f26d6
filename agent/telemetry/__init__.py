"""Telemetry: the ``[telemetry]`` section and the boot's metrics (a Prometheus textfile,
CloudWatch), never a reason for a boot to fail."""
