"""The axis licensing model (its own issue; the folder is reserved so the tree shows all three)."""
