"""zambeze_mesh.cli."""
