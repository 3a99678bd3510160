"""Wire formats of the control plane: each dialect translates onto the same control services."""
