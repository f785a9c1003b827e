# gRPC TLS, mTLS and bearer-token tests (common/grpc_security). They make their certificates with the
# openssl binary and skip the TLS cases without it.
dtm_add_test(grpc_security_test ${CMAKE_CURRENT_SOURCE_DIR}/common/grpc_security_test.cc
  LABELS fast LIBS dtm_grpc dtm_proto)
