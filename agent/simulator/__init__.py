"""Simulated Modbus field device (TCP and RTU over a serial port or pty) for demos and tests."""

from __future__ import annotations

from agent.simulator.core import FaultPlan, LiveLayout, SimulatorCore
from agent.simulator.signals import ArraySignal, RecordCaptures

__all__ = ["ArraySignal", "FaultPlan", "LiveLayout", "RecordCaptures", "SimulatorCore"]
