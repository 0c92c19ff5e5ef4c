"""iiot-splitfed: server package."""
