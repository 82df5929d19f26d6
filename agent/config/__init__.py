"""The configuration as a whole: the :class:`~agent.config.document.Config` composing every
section, reading the file and the ``AGENT_*`` environment, the one validator, and the
validated-configuration cache. Each section is beside its subject; how they are declared is
:mod:`agent.schema`."""
