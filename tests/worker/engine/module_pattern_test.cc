// ModulePattern against std::regex (ECMAScript, anchored at the start as re.match is) on the syntax
// both read the same way, its refusals, and the patterns on which a backtracking engine takes
// exponential time.
#include "worker/engine/module_pattern.h"

#include <gtest/gtest.h>

#include <random>
#include <regex>
#include <string>
#include <vector>

namespace dtm {
namespace {

const std::vector<std::string>& Names() {
  static const std::vector<std::string> names = {
      "",
      "lm_head",
      "model.layers.0.self_attn.q_proj",
      "model.layers.0.mlp.down_proj",
      "model.layers.12.self_attn.k_proj",
      "model.layers.31.mlp.gate_proj",
      "model.layers.7.mlp.up_proj",
      "model.embed_tokens",
      "xmodel.layers.1.mlp.down_proj",
  };
  return names;
}

bool RegexMatch(const std::string& pattern, const std::string& name) {
  return std::regex_search(name, std::regex(pattern, std::regex::ECMAScript), std::regex_constants::match_continuous);
}

// Returns how many names matched.
int ExpectAgreesWithRegex(const std::string& pattern) {
  StatusOr<ModulePattern> p = ModulePattern::Compile(pattern);
  EXPECT_TRUE(p.ok()) << pattern << ": " << p.status().ToString();
  if (!p.ok()) return 0;
  int matched = 0;
  for (const std::string& name : Names()) {
    EXPECT_EQ(p->Matches(name), RegexMatch(pattern, name)) << "pattern '" << pattern << "', name '" << name << "'";
    matched += p->Matches(name) ? 1 : 0;
  }
  return matched;
}

TEST(ModulePatternTest, ThePatternsQuantizationConfigsUse) {
  for (const char* pattern :
       {"", ".*", "lm_head", ".*lm_head", "re", "model\\.layers\\.0\\.", ".*mlp\\.down_proj$", ".*down_proj",
        ".*(q|k|v)_proj$", ".*self_attn\\.(?:q|k|v|o)_proj", "model\\.layers\\.[0-9]+\\.mlp\\..*",
        "model\\.layers\\.\\d\\.", "model\\.layers\\.\\d\\d\\.", ".*[^_]proj$", "^lm_head$", ".*_proj$|lm_head",
        "model.layers.1?2", "m+o?del", "[a-z_]+\\.", "\\w+\\.\\w+", "(model|lm)[._]",
        ".*\\.(mlp|self_attn)\\.[a-z]*_pro.$",
        "[.]", "[-a]", "[a-]", "x*", "(a|)*model", ".*?_proj"}) {
    ExpectAgreesWithRegex(pattern);
  }
}

// Random patterns from the shared syntax, small enough for std::regex's backtracking.
std::string RandomPattern(std::mt19937& rng, int depth) {
  static const std::vector<std::string> atoms = {"m", "o", "d", "e", "l", ".", "\\.", "[0-9]", "[^.]", "_", "p",
                                                 "r", "\\d", "[a-z]", "1", "j", "s"};
  std::uniform_int_distribution<int> pick(0, 9);
  std::string out;
  const int parts = 1 + pick(rng) % 4;
  for (int i = 0; i < parts; ++i) {
    const int kind = pick(rng);
    if (kind == 0 && depth < 2) {
      // Groups are not repeated: nested repetition is where std::regex's backtracking explodes.
      out += "(" + RandomPattern(rng, depth + 1) + (pick(rng) < 5 ? "|" + RandomPattern(rng, depth + 1) : "") + ")";
      continue;
    }
    out += atoms[std::uniform_int_distribution<size_t>(0, atoms.size() - 1)(rng)];
    const int q = pick(rng);
    if (q == 0) out += "*";
    if (q == 1) out += "+";
    if (q == 2) out += "?";
  }
  if (pick(rng) == 0) out += "$";
  return out;
}

TEST(ModulePatternTest, PythonsClassSyntaxWhereECMAScriptDiffers) {
  // In Python a ']' first in a class is itself; ECMAScript reads "[]" as the empty class.
  StatusOr<ModulePattern> p = ModulePattern::Compile("[]a]x");
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->Matches("]x"));
  EXPECT_TRUE(p->Matches("ax"));
  EXPECT_FALSE(p->Matches("bx"));
}

TEST(ModulePatternTest, RandomPatternsAgreeWithRegex) {
  std::mt19937 rng(17);
  int matched = 0;
  for (int i = 0; i < 3000; ++i) matched += ExpectAgreesWithRegex(RandomPattern(rng, 0));
  // Both answers occur often: the agreement is not all "no match".
  EXPECT_GT(matched, 1000);
  EXPECT_LT(matched, 3000 * static_cast<int>(Names().size()) - 1000);
}

TEST(ModulePatternTest, PatternsThatMakeBacktrackingExponentialAreLinear) {
  // std::regex and Python's re take exponential time in the name's length on these; the automaton
  // takes pattern x name steps (this test would time out otherwise).
  const std::string long_name(5000, 'a');
  const std::vector<std::pair<std::string, bool>> cases = {  // the pattern, and whether it matches name + "x"
      {"(.*)*x", true}, {"(a*)*b", false}, {"(a|a)*b", false}, {"(a+)+$x", false}, {".*.*.*.*.*.*.*.*.*.*.*.*x", true}};
  for (const auto& [pattern, with_x] : cases) {
    StatusOr<ModulePattern> p = ModulePattern::Compile(pattern);
    ASSERT_TRUE(p.ok()) << pattern;
    EXPECT_FALSE(p->Matches(long_name)) << pattern;
    EXPECT_EQ(p->Matches(long_name + "x"), with_x) << pattern;
  }
}

TEST(ModulePatternTest, RefusesWhatItDoesNotReadNamingThePosition) {
  auto expect = [](const std::string& pattern, StatusCode code, const std::string& needle) {
    StatusOr<ModulePattern> p = ModulePattern::Compile(pattern);
    ASSERT_FALSE(p.ok()) << pattern;
    EXPECT_EQ(p.status().code(), code) << pattern;
    EXPECT_NE(p.status().message().find(needle), std::string::npos) << p.status().message();
  };
  expect("a{2}", StatusCode::kUnimplemented, "counted repetition '{' at character 2");
  expect("(?=x)", StatusCode::kUnimplemented, "'(?' group");
  expect("(?P<n>a)", StatusCode::kUnimplemented, "'(?' group");
  expect("(a)\\1", StatusCode::kUnimplemented, "the escape '\\1'");
  expect("\\bx", StatusCode::kUnimplemented, "the escape '\\b'");
  expect("a|^b", StatusCode::kUnimplemented, "'^' after the start at character 3");
  expect("*a", StatusCode::kInvalidArgument, "nothing to repeat at character 1");
  expect("(a", StatusCode::kInvalidArgument, "missing ')'");
  expect("a)", StatusCode::kInvalidArgument, "unbalanced ')' at character 2");
  expect("[a", StatusCode::kInvalidArgument, "missing ']'");
  expect("[z-a]", StatusCode::kInvalidArgument, "below its start");
  expect("a\\", StatusCode::kInvalidArgument, "trailing");
  expect(std::string(1001, 'a'), StatusCode::kInvalidArgument, "1001 characters");
  // Deep nesting is read, not a stack overflow.
  EXPECT_TRUE(ModulePattern::Compile(std::string(400, '(') + "a" + std::string(400, ')')).ok());
}

}  // namespace
}  // namespace dtm
