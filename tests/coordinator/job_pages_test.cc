#include "coordinator/job_pages.h"

#include <gtest/gtest.h>

#include <string>

namespace dtm {
namespace {

// base64 of "anyone:s3cret", "x:wrong", ":s3cret" and "user:s3:cret", made by coreutils
// (`printf %s ... | base64`): the decoder is checked against an independent encoder.
constexpr char kAnyoneSecret[] = "YW55b25lOnMzY3JldA==";
constexpr char kWrong[] = "eDp3cm9uZw==";
constexpr char kNoUserSecret[] = "OnMzY3JldA==";
constexpr char kColonInPassword[] = "dXNlcjpzMzpjcmV0";

TEST(JobPagesTest, WithoutATokenEveryRequestIsAuthorized) {
  EXPECT_TRUE(PageAuthorized("", ""));
  EXPECT_TRUE(PageAuthorized("Bearer anything", ""));
}

TEST(JobPagesTest, BearerAndBasicWithTheTokenAsPasswordAreAuthorized) {
  EXPECT_TRUE(PageAuthorized("Bearer s3cret", "s3cret"));
  EXPECT_TRUE(PageAuthorized(std::string("Basic ") + kAnyoneSecret, "s3cret"));
  EXPECT_TRUE(PageAuthorized(std::string("Basic ") + kNoUserSecret, "s3cret"));
  // RFC 7617: the user id holds no colon, so the password is everything after the first one.
  EXPECT_TRUE(PageAuthorized(std::string("Basic ") + kColonInPassword, "s3:cret"));
  // Without padding too.
  EXPECT_TRUE(PageAuthorized("Basic YW55b25lOnMzY3JldA", "s3cret"));
}

TEST(JobPagesTest, AnythingElseIsRefused) {
  for (const std::string& header :
       {std::string(""), std::string("Bearer"), std::string("Bearer "), std::string("Bearer s3cre"),
        std::string("Bearer s3cretX"), std::string("bearer s3cret"), std::string("Basic ") + kWrong,
        std::string("Basic %%%%"), std::string("Basic czNjcmV0"),  // "s3cret" with no colon
        std::string("Digest s3cret"), std::string("s3cret")}) {
    EXPECT_FALSE(PageAuthorized(header, "s3cret")) << header;
  }
}

}  // namespace
}  // namespace dtm
