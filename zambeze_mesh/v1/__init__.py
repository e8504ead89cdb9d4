"""Generated protobuf and gRPC code for the zambeze_mesh.v1 contract. Do not edit."""
