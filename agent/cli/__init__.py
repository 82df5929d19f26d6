"""The command line: parsing, dispatch, the commands that only read (``status``, ``wait``,
``plan``) and ``bake-check``."""
