// Typed fields of a YAML job spec, each error naming the field and its line
// ("job spec: FIELD (line L): WHY"): what job_spec.cc reads every section with.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace dtm::spec_yaml {

// A mapping's value with the key as the user wrote it, so that errors can point at the line.
struct Entry {
  YAML::Node key;
  YAML::Node value;
};
using Entries = std::map<std::string, Entry>;

// "job spec: FIELD (line L): WHY"; the line is 1-based, as editors show it. Both parts may hold the
// spec's text (a key, a value), so both are bounded (common/user_text.h).
Status FieldError(const std::string& field, const YAML::Node& node, const std::string& why);
// "nothing", "a list", "a mapping", or the scalar quoted: what a field got, for its error.
std::string Describe(const YAML::Node& node);

// The entries of a mapping; keys must be plain text and appear once (yaml-cpp keeps both copies of a
// repeated key, and looking one up would silently take the first).
StatusOr<Entries> ReadMapping(const YAML::Node& map, const std::string& field);
// Typos must not be silently ignored: every key must be one the schema knows.
Status CheckKnownKeys(const Entries& entries, const std::string& field, const std::vector<std::string>& allowed);
const Entry* Find(const Entries& entries, const std::string& key);  // nullptr when absent

StatusOr<std::string> ReadString(const YAML::Node& node, const std::string& field);
StatusOr<std::string> ReadNonEmptyString(const YAML::Node& node, const std::string& field);
// Decimal only: yaml-cpp's own conversion would read "010" as octal and "0x10" as hex.
StatusOr<int64_t> ReadInt(const YAML::Node& node, const std::string& field, int64_t min, int64_t max);
StatusOr<bool> ReadBool(const YAML::Node& node, const std::string& field);
// A finite decimal number; yaml-cpp's own conversion accepts ".inf" and "nan".
StatusOr<double> ReadDouble(const YAML::Node& node, const std::string& field);
// A list of strings, each with its node so that an element's error can name its own line.
StatusOr<std::vector<std::pair<std::string, YAML::Node>>> ReadStringList(const YAML::Node& node,
                                                                         const std::string& field);

}  // namespace dtm::spec_yaml
