"""zambeze_mesh.data."""
