"""iiot-splitfed: deploy package."""
