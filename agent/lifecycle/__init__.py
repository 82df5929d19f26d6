"""The end points of an instance's life in its group: the ``[lifecycle]``, ``[termination]``
and ``[signal]`` sections, the launch hook and its signals, termination notices and the
drain."""
