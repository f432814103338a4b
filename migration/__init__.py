"""Migration runtime: per-process routing state, shadow copies, the controller and admin operations."""
