"""The image: the ``[image]`` section, what a bake must not carry, the manifest, pending
security updates, clone hygiene (``agent bake-check`` runs them: :mod:`agent.cli.bake`)."""
