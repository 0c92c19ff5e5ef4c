"""The one-machine stack: every role of iiot-splitfed as real processes on loopback.

Used by ``splitfed demo`` / ``splitfed stack up`` and by the end-to-end tests.
"""
