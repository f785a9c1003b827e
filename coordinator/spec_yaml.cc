#include "coordinator/spec_yaml.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <set>

#include "common/user_text.h"

namespace dtm::spec_yaml {
namespace {

std::string Joined(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace

Status FieldError(const std::string& field, const YAML::Node& node, const std::string& why) {
  std::string where = Bounded(field, 200);
  if (node.IsDefined() && !node.Mark().is_null())
    where += " (line " + std::to_string(node.Mark().line + 1) + ")";
  return InvalidArgumentError("job spec: " + where + ": " + Bounded(why, 1000));
}

std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "nothing";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Scalar:
      return Quoted(node.Scalar());
    default:
      return "an undefined value";
  }
}

StatusOr<Entries> ReadMapping(const YAML::Node& map, const std::string& field) {
  if (!map.IsMap()) return FieldError(field, map, "must be a mapping of fields, got " + Describe(map));
  Entries entries;
  for (const auto& kv : map) {
    const std::string where = field.empty() ? "field" : field;
    if (!kv.first.IsScalar())
      return FieldError(where, kv.first, "a key must be a name, got " + Describe(kv.first));
    const std::string key = kv.first.Scalar();
    const std::string full = field.empty() ? key : field + "." + key;
    // A null value's mark points past it, often at the next line: report the key's line instead.
    if (kv.second.IsNull()) return FieldError(full, kv.first, "has no value");
    auto [it, inserted] = entries.emplace(key, Entry{kv.first, kv.second});
    if (!inserted) {
      return FieldError(full, kv.first,
                        "given twice (first on line " + std::to_string(it->second.key.Mark().line + 1) + ")");
    }
  }
  return entries;
}

Status CheckKnownKeys(const Entries& entries, const std::string& field,
                      const std::vector<std::string>& allowed) {
  const std::set<std::string> known(allowed.begin(), allowed.end());
  for (const auto& [key, entry] : entries) {
    if (known.count(key) == 0) {
      return FieldError(field.empty() ? key : field + "." + key, entry.key,
                        "unknown field; expected one of " + Joined(allowed));
    }
  }
  return OkStatus();
}

StatusOr<std::string> ReadString(const YAML::Node& node, const std::string& field) {
  if (!node.IsScalar()) return FieldError(field, node, "must be a string, got " + Describe(node));
  return node.Scalar();
}

StatusOr<std::string> ReadNonEmptyString(const YAML::Node& node, const std::string& field) {
  ASSIGN_OR_RETURN(std::string s, ReadString(node, field));
  if (s.empty()) return FieldError(field, node, "must not be empty");
  return s;
}

StatusOr<int64_t> ReadInt(const YAML::Node& node, const std::string& field, int64_t min, int64_t max) {
  if (!node.IsScalar()) return FieldError(field, node, "must be an integer, got " + Describe(node));
  const std::string& text = node.Scalar();
  int64_t value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size()) {
    return FieldError(field, node, "must be an integer, got " + Quoted(text));
  }
  if (value < min)
    return FieldError(field, node, "must be at least " + std::to_string(min) + ", got " + text);
  if (value > max) return FieldError(field, node, "must be at most " + std::to_string(max) + ", got " + text);
  return value;
}

StatusOr<bool> ReadBool(const YAML::Node& node, const std::string& field) {
  bool value = false;
  if (!node.IsScalar() || !YAML::convert<bool>::decode(node, value)) {
    return FieldError(field, node, "must be true or false, got " + Describe(node));
  }
  return value;
}

StatusOr<std::vector<std::pair<std::string, YAML::Node>>> ReadStringList(const YAML::Node& node,
                                                                         const std::string& field) {
  if (!node.IsSequence()) return FieldError(field, node, "must be a list of strings, got " + Describe(node));
  std::vector<std::pair<std::string, YAML::Node>> out;
  for (size_t i = 0; i < node.size(); ++i) {
    const YAML::Node item = node[i];
    ASSIGN_OR_RETURN(std::string s, ReadNonEmptyString(item, field + "[" + std::to_string(i) + "]"));
    out.emplace_back(std::move(s), item);
  }
  return out;
}

const Entry* Find(const Entries& entries, const std::string& key) {
  auto it = entries.find(key);
  return it == entries.end() ? nullptr : &it->second;
}

StatusOr<double> ReadDouble(const YAML::Node& node, const std::string& field) {
  if (!node.IsScalar()) return FieldError(field, node, "must be a number, got " + Describe(node));
  const std::string& text = node.Scalar();
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || errno == ERANGE || !std::isfinite(value)) {
    return FieldError(field, node, "must be a finite number, got " + Quoted(text));
  }
  return value;
}

}  // namespace dtm::spec_yaml
