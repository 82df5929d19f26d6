"""The cloud clients: the instance metadata service (IMDSv2) and the AWS APIs (one botocore
session, the bounded transport, the pruned service models, the retry loop, Auto Scaling's
calls), and their sections ``[imds]`` and ``[aws]``."""
