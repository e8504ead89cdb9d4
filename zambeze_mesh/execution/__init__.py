"""zambeze_mesh.execution."""
