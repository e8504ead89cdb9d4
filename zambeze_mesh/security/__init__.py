"""zambeze_mesh.security."""
