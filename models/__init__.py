"""iiot-splitfed: models package."""
