#include "common/components.h"

#include <gtest/gtest.h>

namespace dtm {
namespace {

TEST(ComponentsTest, NamesRoundTripThroughTheParser) {
  for (const ComponentId& c : AllComponents(3)) {
    StatusOr<ComponentId> parsed = ParseComponentName(c.Name(), 3);
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    EXPECT_EQ(*parsed, c);
  }
}

TEST(ComponentsTest, ListsSevenComponentsPerLayerInHfNames) {
  std::vector<ComponentId> all = AllComponents(32);
  ASSERT_EQ(all.size(), 224u);
  EXPECT_EQ(all[0].Name(), "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(all[6].Name(), "model.layers.0.mlp.down_proj");
  EXPECT_EQ(all[223].Name(), "model.layers.31.mlp.down_proj");
  EXPECT_EQ(all[100].Index(), 100);
}

TEST(ComponentsTest, RejectsUnknownComponentsWithTheNameInTheError) {
  for (const char* bad : {"model.layers.3.self_attn.x_proj", "model.layers.32.mlp.up_proj",
                          "layers.0.mlp.up_proj", "model.layers.x.mlp.up_proj", "model.layers..mlp.up_proj",
                          "model.layers.-1.mlp.up_proj", "model.layers.0.mlp.up_proj.weight"}) {
    StatusOr<ComponentId> parsed = ParseComponentName(bad, 32);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find(bad), std::string::npos) << parsed.status().message();
  }
}

TEST(ComponentsTest, MapsComponentsToTheirInputSites) {
  EXPECT_EQ(InputSiteOf(ComponentKind::kK), LinearInputSite::kAttentionIn);
  EXPECT_EQ(InputSiteOf(ComponentKind::kO), LinearInputSite::kAttentionOut);
  EXPECT_EQ(InputSiteOf(ComponentKind::kUp), LinearInputSite::kMlpIn);
  EXPECT_EQ(InputSiteOf(ComponentKind::kDown), LinearInputSite::kMlpHidden);
}

}  // namespace
}  // namespace dtm
