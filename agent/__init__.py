"""iiot-splitfed: agent package."""
