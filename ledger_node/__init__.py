"""iiot-splitfed: ledger_node package."""
