"""The bodies of ``rtanim video``, ``webcam``, ``image``, ``analyze`` and ``demo``, which the CLI hands over to."""
