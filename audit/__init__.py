"""Empirical privacy audit of a device: attacks on what crossed the wire (``splitfed audit``).

A deploy-like tool, not a role: it imports ``agent`` (the device's own
mechanism code, for the in-process harness), ``models`` and ``protocol``,
and no role imports it. See ``docs/audit.md``.
"""
