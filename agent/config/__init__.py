"""The configuration: the whole of it and its small sections, the field rules, reading the file
and the ``AGENT_*`` environment, the one validator, and the validated-configuration cache.
The sections of secrets, tuning and readiness are beside their subjects."""
