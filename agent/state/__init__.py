"""The instance's state: ``state.json`` (its writer and its readers) and the history across
boots."""
