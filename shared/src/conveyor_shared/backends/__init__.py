"""Storage backends: one module each, implementing ``conveyor_shared.transfer`` protocols."""
