"""Settings split: ``base`` (everything, read from the environment), ``dev``, ``test`` and ``prod``."""
