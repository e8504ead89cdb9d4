"""zambeze_mesh.membership."""
