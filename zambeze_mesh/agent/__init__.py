"""zambeze_mesh.agent."""
