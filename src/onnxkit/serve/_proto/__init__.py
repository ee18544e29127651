"""Generated KServe v2 gRPC code (scripts/gen_proto.py). Do not edit."""
