#include "common/compression_config.h"

#include <algorithm>
#include <charconv>
#include <set>
#include <system_error>

namespace dtm {
namespace {

constexpr std::string_view kBlanks = " \t\r\n";

std::string_view Trim(std::string_view s) {
  size_t begin = s.find_first_not_of(kBlanks);
  if (begin == std::string_view::npos) return {};
  size_t end = s.find_last_not_of(kBlanks);
  return s.substr(begin, end - begin + 1);
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t pos = s.find(sep, start);
    if (pos == std::string_view::npos) {
      parts.push_back(s.substr(start));
      return parts;
    }
    parts.push_back(s.substr(start, pos - start));
    start = pos + 1;
  }
}

// std::from_chars: locale-independent and refuses leading blanks and '+', unlike strtod.
template <typename T>
bool ParseWhole(std::string_view s, T* out) {
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

// The shortest decimal text that parses back to the same double (std::to_chars' guarantee).
std::string ShortestDouble(double v) {
  char buf[64];
  auto [ptr, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return ec == std::errc() ? std::string(buf, ptr) : std::to_string(v);
}

StatusOr<double> ParseFraction(std::string_view text, std::string_view s) {
  double f = 0;
  // Only decimal notation: from_chars would also take "nan" and "inf".
  bool decimal = s.find_first_not_of("0123456789.eE+-") == std::string_view::npos;
  if (!decimal || !ParseWhole(s, &f)) {
    return InvalidArgumentError("bad compression method '" + std::string(text) + "': fraction '" +
                                std::string(s) + "' is not a number");
  }
  if (!(f >= 0.0 && f <= 1.0)) {
    return InvalidArgumentError("bad compression method '" + std::string(text) + "': fraction " +
                                std::string(s) + " is outside [0, 1]");
  }
  return f + 0.0;  // turns -0 into 0, so "prune:-0" and "prune:0" are one config
}

StatusOr<CompressionMethod> ParseGptq(std::string_view text, const std::vector<std::string_view>& parts) {
  auto bad = [&](const std::string& why) {
    return InvalidArgumentError("bad compression method '" + std::string(text) + "': " + why);
  };
  if (parts.size() < 2 || parts.size() > 3) return bad("expected gptq:BITS or gptq:BITS:gGROUP");
  CompressionMethod m{MethodKind::kGptq};
  if (!ParseWhole(parts[1], &m.bits)) return bad("bits '" + std::string(parts[1]) + "' is not a number");
  if (m.bits != 2 && m.bits != 3 && m.bits != 4 && m.bits != 8) {
    return bad("bits " + std::to_string(m.bits) + " is not one of 2, 3, 4, 8");
  }
  if (parts.size() == 3) {
    std::string_view g = parts[2];
    if (g.empty() || g[0] != 'g' || !ParseWhole(g.substr(1), &m.group_size)) {
      return bad("group '" + std::string(g) + "' is not g<size>");
    }
    if (m.group_size <= 0) return bad("group size " + std::to_string(m.group_size) + " is not positive");
  }
  return m;
}

}  // namespace

std::string CompressionMethod::ToString() const {
  switch (kind) {
    case MethodKind::kPrune:
      return "prune:" + ShortestDouble(fraction);
    case MethodKind::kRandomPrune:
      return "random-prune:" + ShortestDouble(fraction) + ":" + std::to_string(seed);
    case MethodKind::kInt8AbsMax:
      return "int8-absmax";
    case MethodKind::kInt8AbsMaxRow:
      return "int8-absmax-row";
    case MethodKind::kLlmInt8:
      return "llm-int8";
    case MethodKind::kGptq:
      return "gptq:" + std::to_string(bits) + (group_size > 0 ? ":g" + std::to_string(group_size) : "");
  }
  return "?";
}

StatusOr<CompressionMethod> ParseCompressionMethod(std::string_view text) {
  std::vector<std::string_view> parts = Split(text, ':');
  std::string_view name = parts[0];
  auto arity = [&](size_t n, const char* form) -> Status {
    if (parts.size() == n) return OkStatus();
    return InvalidArgumentError("bad compression method '" + std::string(text) + "': expected " + form);
  };
  if (name == "prune") {
    RETURN_IF_ERROR(arity(2, "prune:FRACTION"));
    CompressionMethod m{MethodKind::kPrune};
    ASSIGN_OR_RETURN(m.fraction, ParseFraction(text, parts[1]));
    return m;
  }
  if (name == "random-prune") {
    RETURN_IF_ERROR(arity(3, "random-prune:FRACTION:SEED"));
    CompressionMethod m{MethodKind::kRandomPrune};
    ASSIGN_OR_RETURN(m.fraction, ParseFraction(text, parts[1]));
    if (!ParseWhole(parts[2], &m.seed)) {
      return InvalidArgumentError("bad compression method '" + std::string(text) + "': seed '" +
                                  std::string(parts[2]) + "' is not an unsigned 64-bit integer");
    }
    return m;
  }
  if (name == "int8-absmax") {
    RETURN_IF_ERROR(arity(1, "int8-absmax without parameters"));
    return CompressionMethod{MethodKind::kInt8AbsMax};
  }
  if (name == "int8-absmax-row") {
    RETURN_IF_ERROR(arity(1, "int8-absmax-row without parameters"));
    return CompressionMethod{MethodKind::kInt8AbsMaxRow};
  }
  if (name == "llm-int8") {
    RETURN_IF_ERROR(arity(1, "llm-int8 without parameters"));
    return CompressionMethod{MethodKind::kLlmInt8};
  }
  if (name == "gptq") return ParseGptq(text, parts);
  return InvalidArgumentError("unknown compression method '" + std::string(text) +
                              "': expected prune:F, random-prune:F:SEED, int8-absmax, int8-absmax-row, "
                              "llm-int8 or gptq:B[:gG]");
}

std::string CompressionConfig::Canonical() const {
  std::string out;
  for (const auto& [component, method] : entries) {
    if (!out.empty()) out += ',';
    out += component.Name() + "=" + method.ToString();
  }
  return out;
}

StatusOr<CompressionConfig> ParseCompressionConfig(std::string_view text, int num_layers) {
  CompressionConfig config;
  if (Trim(text).empty()) return config;
  std::set<int> named;  // component indices seen so far
  for (std::string_view raw : Split(text, ',')) {
    std::string_view item = Trim(raw);
    auto bad = [&](const std::string& why) {
      return InvalidArgumentError("compression config item '" + std::string(item) + "': " + why);
    };
    if (item.empty()) return bad("empty item (stray ',')");
    size_t eq = item.find('=');
    if (eq == std::string_view::npos) return bad("missing '=' between component and method");
    StatusOr<ComponentId> component = ParseComponentName(Trim(item.substr(0, eq)), num_layers);
    if (!component.ok()) return bad(component.status().message());
    StatusOr<CompressionMethod> method = ParseCompressionMethod(Trim(item.substr(eq + 1)));
    if (!method.ok()) return bad(method.status().message());
    if (!named.insert(component->Index()).second) return bad("component named twice");
    config.entries.emplace_back(*component, *method);
  }
  // Sort on the name string, not on Index(): the canonical form is defined by the text users see.
  std::sort(config.entries.begin(), config.entries.end(),
            [](const auto& a, const auto& b) { return a.first.Name() < b.first.Name(); });
  return config;
}

StatusOr<CompressionConfig> ParsePruneTargets(std::string_view text, int num_layers) {
  ASSIGN_OR_RETURN(CompressionConfig config, ParseCompressionConfig(text, num_layers));
  for (const auto& [id, method] : config.entries) {
    if (method.kind != MethodKind::kPrune) {
      return InvalidArgumentError(id.Name() + "=" + method.ToString() +
                                  ": training prunes by magnitude only (prune:F)");
    }
  }
  return config;
}

bool ConfigUsesGptq(std::string_view canonical_config) {
  // "COMPONENT=METHOD" entries joined by commas; gptq's canonical methods are "gptq:BITS[:gG]".
  return canonical_config.find("=gptq:") != std::string_view::npos;
}

}  // namespace dtm
