"""Tuning: the ``[tuning]`` section, the expression language, profiles, the memory budget, and
the plan that writes the values."""
