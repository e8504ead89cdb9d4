"""Shared test helpers: free ports, real `zmesh` processes, in-process meshes."""
