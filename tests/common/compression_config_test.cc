#include "common/compression_config.h"

#include <gtest/gtest.h>

#include <string>

namespace dtm {
namespace {

constexpr int kLayers = 32;

// The error message of parsing `text`, which must fail with INVALID_ARGUMENT.
std::string ConfigError(const std::string& text) {
  StatusOr<CompressionConfig> config = ParseCompressionConfig(text, kLayers);
  EXPECT_FALSE(config.ok()) << text << " parsed as " << (config.ok() ? config->Canonical() : "");
  if (config.ok()) return "";
  EXPECT_EQ(config.status().code(), StatusCode::kInvalidArgument);
  return config.status().message();
}

TEST(CompressionConfigTest, ParsesEveryMethodOfTheSpec) {
  StatusOr<CompressionMethod> m = ParseCompressionMethod("prune:0.25");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->kind, MethodKind::kPrune);
  EXPECT_EQ(m->fraction, 0.25);

  m = ParseCompressionMethod("random-prune:0.1:7");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->kind, MethodKind::kRandomPrune);
  EXPECT_EQ(m->fraction, 0.1);
  EXPECT_EQ(m->seed, 7u);

  EXPECT_EQ(ParseCompressionMethod("int8-absmax")->kind, MethodKind::kInt8AbsMax);
  EXPECT_EQ(ParseCompressionMethod("int8-absmax-row")->kind, MethodKind::kInt8AbsMaxRow);
  EXPECT_EQ(ParseCompressionMethod("llm-int8")->kind, MethodKind::kLlmInt8);

  m = ParseCompressionMethod("gptq:3:g128");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->kind, MethodKind::kGptq);
  EXPECT_EQ(m->bits, 3);
  EXPECT_EQ(m->group_size, 128);
  EXPECT_EQ(ParseCompressionMethod("gptq:8")->group_size, 0);
}

TEST(CompressionConfigTest, RoundTripsEveryCanonicalMethodString) {
  for (const char* text :
       {"prune:0.5", "prune:0", "prune:1", "prune:0.1", "prune:0.333", "prune:1e-05", "random-prune:0.1:7",
        "random-prune:1:18446744073709551615", "int8-absmax", "int8-absmax-row", "llm-int8", "gptq:2",
        "gptq:3", "gptq:4", "gptq:8", "gptq:4:g128", "gptq:2:g1"}) {
    StatusOr<CompressionMethod> m = ParseCompressionMethod(text);
    ASSERT_TRUE(m.ok()) << text << ": " << m.status().ToString();
    EXPECT_EQ(m->ToString(), text);
  }
}

TEST(CompressionConfigTest, PrintsFractionsInTheShortestFormThatRoundTrips) {
  for (double f : {0.1, 0.2 + 0.1, 1.0 / 3, 0.05, 1e-9, 0.9999999999999999}) {
    CompressionMethod m{MethodKind::kPrune, f};
    StatusOr<CompressionMethod> back = ParseCompressionMethod(m.ToString());
    ASSERT_TRUE(back.ok()) << m.ToString();
    EXPECT_EQ(back->fraction, f) << m.ToString();
  }
  EXPECT_EQ((CompressionMethod{MethodKind::kPrune, 0.30000000000000004}).ToString(),
            "prune:0.30000000000000004");
  EXPECT_EQ(ParseCompressionMethod("prune:0.50")->ToString(), "prune:0.5");
  EXPECT_EQ(ParseCompressionMethod("prune:-0")->ToString(), "prune:0");
}

TEST(CompressionConfigTest, SortsEntriesByComponentNameInTheCanonicalForm) {
  StatusOr<CompressionConfig> config = ParseCompressionConfig(
      "model.layers.3.self_attn.q_proj=prune:0.50,model.layers.10.mlp.up_proj=gptq:4:g128,"
      "model.layers.3.mlp.down_proj=int8-absmax",
      kLayers);
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  // "10" < "3" as strings: the order is that of the names, not of the layer numbers.
  EXPECT_EQ(config->Canonical(),
            "model.layers.10.mlp.up_proj=gptq:4:g128,model.layers.3.mlp.down_proj=int8-absmax,"
            "model.layers.3.self_attn.q_proj=prune:0.5");
  ASSERT_EQ(config->entries.size(), 3u);
  EXPECT_EQ(config->entries[0].first, (ComponentId{10, ComponentKind::kUp}));
  EXPECT_EQ(config->entries[2].second, (CompressionMethod{MethodKind::kPrune, 0.5}));
}

TEST(CompressionConfigTest, CanonicalFormParsesBackToTheSameConfig) {
  StatusOr<CompressionConfig> config = ParseCompressionConfig(
      "model.layers.31.mlp.gate_proj=random-prune:0.125:42,model.layers.0.self_attn.v_proj=llm-int8,"
      "model.layers.0.self_attn.o_proj=int8-absmax-row",
      kLayers);
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  StatusOr<CompressionConfig> again = ParseCompressionConfig(config->Canonical(), kLayers);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(*again, *config);
  EXPECT_EQ(again->Canonical(), config->Canonical());
}

TEST(CompressionConfigTest, OrderOfItemsDoesNotChangeTheCanonicalForm) {
  StatusOr<CompressionConfig> a =
      ParseCompressionConfig("model.layers.1.mlp.up_proj=gptq:4,model.layers.0.mlp.up_proj=gptq:8", kLayers);
  StatusOr<CompressionConfig> b =
      ParseCompressionConfig("model.layers.0.mlp.up_proj=gptq:8,model.layers.1.mlp.up_proj=gptq:4", kLayers);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->Canonical(), b->Canonical());
}

TEST(CompressionConfigTest, ToleratesWhitespaceAroundItems) {
  StatusOr<CompressionConfig> config = ParseCompressionConfig(
      "  model.layers.2.mlp.up_proj = prune:0.5 ,\tmodel.layers.1.mlp.up_proj=llm-int8\n", kLayers);
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->Canonical(), "model.layers.1.mlp.up_proj=llm-int8,model.layers.2.mlp.up_proj=prune:0.5");
}

TEST(CompressionConfigTest, EmptyStringIsTheUncompressedModel) {
  for (const char* text : {"", "   ", "\n"}) {
    StatusOr<CompressionConfig> config = ParseCompressionConfig(text, kLayers);
    ASSERT_TRUE(config.ok()) << config.status().ToString();
    EXPECT_TRUE(config->empty());
    EXPECT_EQ(config->Canonical(), "");
  }
}

TEST(CompressionConfigTest, RejectsUnknownComponentsNamingThem) {
  for (const char* name : {"model.layers.32.mlp.up_proj", "model.layers.0.mlp.x_proj", "lm_head"}) {
    std::string message = ConfigError(std::string(name) + "=prune:0.5");
    EXPECT_NE(message.find(name), std::string::npos) << message;
    EXPECT_NE(message.find("unknown component"), std::string::npos) << message;
  }
}

TEST(CompressionConfigTest, RejectsUnknownMethodsNamingTheItem) {
  for (const char* method :
       {"prune", "quantize:4", "int8", "gptq", "int8-absmax:1", "llm-int8:6", "PRUNE:0.5"}) {
    std::string item = std::string("model.layers.0.mlp.up_proj=") + method;
    std::string message = ConfigError("model.layers.1.mlp.up_proj=gptq:4," + item);
    EXPECT_NE(message.find("'" + item + "'"), std::string::npos) << message;
    EXPECT_EQ(message.find("layers.1"), std::string::npos) << "names the wrong item: " << message;
  }
}

TEST(CompressionConfigTest, RejectsBadParametersNamingTheItem) {
  struct Case {
    const char* method;
    const char* why;
  };
  for (const Case& c : {Case{"prune:1.5", "outside [0, 1]"},
                        Case{"prune:-0.1", "outside [0, 1]"},
                        Case{"prune:nan", "not a number"},
                        Case{"prune:inf", "not a number"},
                        Case{"prune:0.5x", "not a number"},
                        Case{"prune:", "not a number"},
                        Case{"prune: 0.5", "not a number"},
                        Case{"prune:+0.5", "not a number"},
                        Case{"random-prune:0.5", "expected random-prune:FRACTION:SEED"},
                        Case{"random-prune:0.5:-1", "seed"},
                        Case{"random-prune:0.5:x", "seed"},
                        Case{"random-prune:2:1", "outside [0, 1]"},
                        Case{"gptq:5", "not one of 2, 3, 4, 8"},
                        Case{"gptq:16", "not one of 2, 3, 4, 8"},
                        Case{"gptq:four", "not a number"},
                        Case{"gptq:4:g0", "not positive"},
                        Case{"gptq:4:g-8", "not positive"},
                        Case{"gptq:4:128", "g<size>"},
                        Case{"gptq:4:g", "g<size>"},
                        Case{"gptq:4:g128:x", "expected gptq:BITS"}}) {
    std::string item = std::string("model.layers.5.self_attn.k_proj=") + c.method;
    std::string message = ConfigError(item);
    EXPECT_NE(message.find("'" + item + "'"), std::string::npos) << message;
    EXPECT_NE(message.find(c.why), std::string::npos) << c.method << ": " << message;
  }
}

TEST(CompressionConfigTest, RejectsAComponentNamedTwice) {
  std::string message = ConfigError(
      "model.layers.0.mlp.up_proj=prune:0.5,model.layers.1.mlp.up_proj=gptq:4,"
      "model.layers.0.mlp.up_proj=gptq:4");
  EXPECT_NE(message.find("'model.layers.0.mlp.up_proj=gptq:4'"), std::string::npos) << message;
  EXPECT_NE(message.find("twice"), std::string::npos) << message;
}

TEST(CompressionConfigTest, RejectsItemsWithoutEquals) {
  std::string message = ConfigError("model.layers.0.mlp.up_proj=prune:0.5,model.layers.1.mlp.up_proj:gptq:4");
  EXPECT_NE(message.find("'model.layers.1.mlp.up_proj:gptq:4'"), std::string::npos) << message;
  EXPECT_NE(message.find("missing '='"), std::string::npos) << message;
}

TEST(CompressionConfigTest, RejectsEmptyItems) {
  for (const char* text : {"model.layers.0.mlp.up_proj=prune:0.5,", ",model.layers.0.mlp.up_proj=prune:0.5",
                           "model.layers.0.mlp.up_proj=prune:0.5, ,model.layers.1.mlp.up_proj=prune:0.5"}) {
    EXPECT_NE(ConfigError(text).find("empty item"), std::string::npos) << text;
  }
}

}  // namespace
}  // namespace dtm
