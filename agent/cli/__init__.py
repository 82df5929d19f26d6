"""The command line: parsing, dispatch, and the commands that only read (``status``, ``wait``,
``plan``)."""
