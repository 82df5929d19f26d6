"""Tuning: the ``[tuning]`` section, profiles, the memory budget, and the plan that writes the
values (their expressions: :mod:`agent.schema.expr`)."""
