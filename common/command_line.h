// How every dtm binary reads its command line (dtmctl, dtm-coordinator, dtm-worker): CLI11, with
// the exit codes the README documents and a suggestion for a mistyped name.
//
//   --help, --version: printed on stdout, exit 0;
//   anything CLI11 refuses (an unknown command or flag, a missing or malformed value): CLI11's
//   message on stderr, then "did you mean ..." when a known name is close to the unknown one,
//   exit 2 (bad input, as for every other usage error).
//
// Header-only, so that the libraries under common/ need no CLI11.
#pragma once

#include <algorithm>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>

namespace dtm {

inline constexpr int kExitUsageError = 2;

// Levenshtein distance between two short names.
inline size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// The candidate closest to `name`, if it is close enough to be what was meant: at most 2 edits, and
// fewer than half of the name's characters.
inline std::optional<std::string> ClosestName(std::string_view name, const std::vector<std::string>& candidates) {
  std::optional<std::string> best;
  size_t best_distance = 3;
  for (const std::string& candidate : candidates) {
    const size_t d = EditDistance(name, candidate);
    if (d < best_distance && 2 * d < name.size()) {
      best = candidate;
      best_distance = d;
    }
  }
  return best;
}

// "did you mean ..." lines for the unknown command or flags of `argv`, as `app` would read them: the
// first word that is not a command of the command it follows, and every --flag the command it
// follows lacks.
inline std::vector<std::string> Suggestions(CLI::App& app, int argc, const char* const* argv) {
  std::vector<std::string> out;
  CLI::App* command = &app;
  bool expect_command = true;  // a bare word here names a command of `command`, if it has any
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--", 0) == 0 && arg.size() > 2) {
      const std::string flag = arg.substr(0, arg.find('='));
      bool known = false;
      std::vector<std::string> flags;
      for (CLI::App* scope = command; scope != nullptr; scope = scope->get_parent()) {
        for (const CLI::Option* option : scope->get_options()) {
          for (const std::string& name : option->get_lnames()) {
            flags.push_back("--" + name);
            if ("--" + name == flag) known = true;
          }
        }
      }
      if (!known) {
        if (std::optional<std::string> close = ClosestName(flag, flags)) {
          out.push_back("unknown flag " + flag + "; did you mean " + *close + "?");
        }
      }
      continue;
    }
    if (arg.empty() || arg[0] == '-') continue;
    std::vector<std::string> commands;
    CLI::App* match = nullptr;
    for (CLI::App* sub : command->get_subcommands([](CLI::App*) { return true; })) {
      commands.push_back(sub->get_name());
      if (sub->get_name() == arg) match = sub;
    }
    if (commands.empty() || !expect_command) continue;
    if (match != nullptr) {
      command = match;
      continue;
    }
    if (std::optional<std::string> close = ClosestName(arg, commands)) {
      out.push_back("unknown command '" + arg + "'; did you mean '" + *close + "'?");
    }
    expect_command = false;  // values of flags follow; only the first stray word is a command
  }
  return out;
}

// Parses, or says why not: nullopt when the program should go on, else the exit code.
inline std::optional<int> ParseCommandLine(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    (void)app.exit(e);  // prints CLI11's message and "Run with --help for more information."
    std::string_view program = argc > 0 ? argv[0] : "";
    program = program.substr(program.rfind('/') + 1);
    for (const std::string& line : Suggestions(app, argc, argv)) std::cerr << program << ": " << line << "\n";
    return kExitUsageError;
  }
}

}  // namespace dtm
