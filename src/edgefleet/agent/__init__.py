"""The device agent: keeps a verified model serving and follows the desired state.

``statemachine`` is the sans-I/O core (pure transitions on events, like h11): the
simulator runs thousands of them and tests walk every edge. ``slots`` keeps the two
model slots and the agent's state on disk, crash-safe. The shell (HTTP client, file
system, runtime, clock) drives the core.
"""
