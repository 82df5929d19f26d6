"""The boot: ``agent run``, the sequence of phases and its failure boundary, the resident
daemon and its jobs."""
