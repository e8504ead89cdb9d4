"""zambeze_mesh.store."""
