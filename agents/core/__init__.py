"""Pure logic of Relevanz: no I/O, no clock, no global randomness.

Every function here takes its inputs (records, state, ``now``, a seeded
generator) and returns new state and output events.
"""
