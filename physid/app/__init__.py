"""The application layer: the registry of systems, the CLI, sweeps, reports and benchmarks.

Only this layer imports the systems (``physid.envs``, ``physid.models``); the engine and the
generic library never do, and nothing imports the CLI.
"""
