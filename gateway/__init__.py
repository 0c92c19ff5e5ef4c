"""iiot-splitfed: gateway package."""
