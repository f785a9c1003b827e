#include "common/grpc_status.h"

#include <gtest/gtest.h>

#include <string>

#include "common/user_text.h"

namespace dtm {
namespace {

class GrpcStatusTest : public ::testing::Test {
 protected:
  // Every code but OK, by gRPC's numbers.
  static constexpr int kFirstCode = 1;
  static constexpr int kLastCode = 16;
};

TEST_F(GrpcStatusTest, OkStaysOk) {
  EXPECT_TRUE(ToGrpcStatus(OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK, "LeaseTasks").ok());
}

TEST_F(GrpcStatusTest, ToGrpcStatusKeepsEveryCodeAndAShortMessage) {
  for (int code = kFirstCode; code <= kLastCode; ++code) {
    SCOPED_TRACE("code " + std::to_string(code));
    const std::string message = "job 'j-1': probes: not found (" + std::to_string(code) + ")";
    grpc::Status out = ToGrpcStatus(Status(static_cast<StatusCode>(code), message));
    EXPECT_EQ(static_cast<int>(out.error_code()), code);
    EXPECT_EQ(out.error_message(), message);
  }
}

TEST_F(GrpcStatusTest, FromGrpcStatusKeepsEveryCodeAndTheMessage) {
  for (int code = kFirstCode; code <= kLastCode; ++code) {
    SCOPED_TRACE("code " + std::to_string(code));
    Status out = FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(code), "peer says no"));
    EXPECT_EQ(static_cast<int>(out.code()), code);
    EXPECT_EQ(out.message(), "peer says no");
  }
}

TEST_F(GrpcStatusTest, FromGrpcStatusPrefixesWhatWasCalled) {
  Status out = FromGrpcStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection refused"),
                              "CompleteTask to the coordinator");
  EXPECT_EQ(out.code(), StatusCode::kUnavailable);
  EXPECT_EQ(out.message(), "CompleteTask to the coordinator: connection refused");
}

TEST_F(GrpcStatusTest, RoundTripKeepsCodeAndPrintableMessage) {
  const Status in(StatusCode::kFailedPrecondition, "worker 'w1' runs dtm '0.1.0'");
  Status back = FromGrpcStatus(ToGrpcStatus(in));
  EXPECT_EQ(back.code(), in.code());
  EXPECT_EQ(back.message(), in.message());
}

// The header promises a message of at most kMaxStatusMessageBytes. Today the message is cut at
// that many bytes and then "... (N bytes)" is appended, so it comes out longer than the limit.
TEST_F(GrpcStatusTest, ToGrpcStatusBoundsALongMessageToTheLimit) {
  const std::string message(3 * kMaxStatusMessageBytes, 'm');
  grpc::Status out = ToGrpcStatus(Status(StatusCode::kInvalidArgument, message));
  EXPECT_EQ(out.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_LE(out.error_message().size(), kMaxStatusMessageBytes);
  EXPECT_GT(out.error_message().size(), kMaxStatusMessageBytes / 2);
  EXPECT_EQ(out.error_message().substr(0, 100), message.substr(0, 100));
}

TEST_F(GrpcStatusTest, ToGrpcStatusKeepsAMessageOfExactlyTheLimit) {
  const std::string message(kMaxStatusMessageBytes, 'm');
  EXPECT_EQ(ToGrpcStatus(Status(StatusCode::kInternal, message)).error_message(), message);
}

TEST_F(GrpcStatusTest, ToGrpcStatusMakesTheMessageValidPrintableUtf8) {
  const std::string message = "bad file 'a\xff\xfe.jsonl':\nline 2 \xed\xa0\x80 \xc3\xa9";
  grpc::Status out = ToGrpcStatus(Status(StatusCode::kDataLoss, message));
  EXPECT_EQ(out.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(InvalidUtf8Offset(out.error_message()), std::string_view::npos) << out.error_message();
  EXPECT_EQ(out.error_message().find('\n'), std::string::npos);
  // What was printable is kept, U+00E9 included.
  EXPECT_EQ(out.error_message().rfind("bad file 'a", 0), 0u);
  EXPECT_NE(out.error_message().find("line 2"), std::string::npos);
  EXPECT_NE(out.error_message().find("\xc3\xa9"), std::string::npos);
}

TEST_F(GrpcStatusTest, ToGrpcStatusCutsALongMultiByteMessageAtACharacterBoundary) {
  std::string message;
  while (message.size() < 2 * kMaxStatusMessageBytes) message += "\xe6\x97\xa5";  // U+65E5, 3 bytes
  grpc::Status out = ToGrpcStatus(Status(StatusCode::kAborted, message));
  EXPECT_EQ(InvalidUtf8Offset(out.error_message()), std::string_view::npos);
  EXPECT_LT(out.error_message().size(), message.size());
}

}  // namespace
}  // namespace dtm
