"""The AWS clients: one botocore session, the bounded transport, the pruned service models, the
retry loop."""
