"""iiot-splitfed: protocol package."""
