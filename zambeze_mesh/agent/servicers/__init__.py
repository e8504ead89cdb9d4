"""gRPC servicers: thin adapters between protobuf messages and library objects."""
