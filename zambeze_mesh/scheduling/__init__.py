"""zambeze_mesh.scheduling."""
