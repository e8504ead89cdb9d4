"""zambeze_mesh.transport."""
