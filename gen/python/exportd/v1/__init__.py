"""Generated protobuf and gRPC modules of the exportd.v1 contract (make gen)."""
