"""``agent bake-check``: the last step of an image build, before the snapshot.

It fails the bake (exit 1, one line per problem) when the image would carry credentials (AWS
credential files or variables, anything left under the secrets or state directory on disk),
when the unit is not enabled (:mod:`agent.image.checks`), when security updates are pending
(:mod:`agent.image.packages`), or when every instance would be a clone of the build
(:mod:`agent.image.hygiene`; ``--fix`` cleans that first); an invalid configuration is exit
78. Then it writes the manifest, and primes the validated-configuration cache
(:mod:`agent.config.cache`) so that the image's first boot reads no TOML and loads no pydantic.
"""

from __future__ import annotations

import sys
from pathlib import Path

from agent.config import cache
from agent.errors import escape
from agent.image import checks, hygiene, packages


def bake_check(config_path: str | None, root: str, manifest: str | None,
               fix: bool = False) -> int:
    """``agent bake-check``: 0 clean (manifest written), 1 problems (listed), 78 config.
    ``fix``: first clean what would make every instance a clone, and say what was done."""
    where = (cache.cache_path() if Path(root) == Path("/") else
             str(Path(root) / cache.DEFAULT_CACHE.lstrip("/")))
    cfg, cached = cache.prime(config_path, where)  # ConfigError: exit 78, one line
    base = Path(root)
    if fix:
        for done in hygiene.fix(base):
            print(f"agent: bake-check --fix: {done}")
    found = packages.inspect(base)
    for note in found.notes:
        print(f"agent: bake-check: {note}")
    problems = [*checks.bake_problems(base, cfg.secrets.dir, cfg.state_dir),
                *hygiene.problems(base), *found.problems]
    for problem in problems:
        print(f"agent: bake-check: {escape(problem)}", file=sys.stderr)
    if problems:
        print(f"agent: bake-check failed: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    target = Path(manifest or base / cfg.image.manifest.lstrip("/"))
    data = checks.write_manifest(target, base, found)
    installed = found.inventory.record() if found.inventory else None
    print(f"agent: bake-check passed; manifest {target} ({data['built_at']}, agent "
          f"{data['agent']}, {data['os']}"
          + (f", {installed['count']} packages, no security update pending" if installed else "")
          + f"); validated configuration "
          f"{'cached in ' + where if cached else 'not cached (' + (where or 'off') + ')'}")
    return 0
