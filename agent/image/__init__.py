"""The image: bake checks, the manifest, pending security updates, clone hygiene."""
