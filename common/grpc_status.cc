#include "common/grpc_status.h"

#include <string>

#include "common/user_text.h"

namespace dtm {

grpc::Status ToGrpcStatus(const Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      Bounded(status.message(), kMaxStatusMessageBytes));
}

Status FromGrpcStatus(const grpc::Status& status, std::string_view what) {
  if (status.ok()) return OkStatus();
  std::string message =
      what.empty() ? status.error_message() : std::string(what) + ": " + status.error_message();
  return Status(static_cast<StatusCode>(status.error_code()), std::move(message));
}

}  // namespace dtm
