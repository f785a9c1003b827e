// The one conversion between dtm's Status and gRPC's, used by every server handler and client.
// dtm's codes are gRPC's codes with gRPC's numbers (common/status.h), so the code maps one to one;
// only the message is bounded on the way out.
#pragma once

#include <grpcpp/support/status.h>

#include <string_view>

#include "common/status.h"

namespace dtm {

// Bytes of a status message sent over gRPC. Messages travel in an HTTP/2 trailer, which peers cap
// (8 KiB by default in gRPC): a longer one would turn the reply into an error of its own.
inline constexpr size_t kMaxStatusMessageBytes = 4096;

// The same code; the message made valid UTF-8, printable and at most kMaxStatusMessageBytes.
grpc::Status ToGrpcStatus(const Status& status);

// The same code; the message prefixed with `what` and ": " when `what` is not empty (e.g.
// "CompleteTask to the coordinator: ...").
Status FromGrpcStatus(const grpc::Status& status, std::string_view what = {});

}  // namespace dtm
