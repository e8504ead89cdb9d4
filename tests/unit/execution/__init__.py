"""Tests of zambeze_mesh.execution."""
