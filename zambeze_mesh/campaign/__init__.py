"""zambeze_mesh.campaign."""
