#include "worker/engine/module_pattern.h"

#include <utility>

namespace dtm {

// Recursive descent over the pattern, building Thompson fragments: a start state and the dangling
// exits (a state's `next` or `alt`) that the following fragment is patched into.
class ModulePattern::Parser {
 public:
  Parser(const std::string& pattern, std::vector<State>& states) : p_(pattern), states_(states) {}

  StatusOr<int> Compile() {
    size_t i = 0;
    if (!p_.empty() && p_[0] == '^') i = 1;  // re.match is anchored at the start already
    pos_ = i;
    ASSIGN_OR_RETURN(Fragment f, Alternation());
    if (pos_ != p_.size()) return Malformed("unbalanced ')'");
    const int match = Add(Op::kMatch);
    Patch(f, match);
    return f.start;
  }

 private:
  struct Exit {
    int state;
    bool alt;  // the `alt` field, else `next`
  };
  struct Fragment {
    int start;
    std::vector<Exit> exits;
  };

  int Add(Op op) {
    states_.push_back(State{});
    states_.back().op = op;
    return static_cast<int>(states_.size()) - 1;
  }
  void Patch(const Fragment& f, int to) {
    for (const Exit& e : f.exits) (e.alt ? states_[e.state].alt : states_[e.state].next) = to;
  }
  Fragment Consume(const std::bitset<256>& chars) {
    const int s = Add(Op::kChar);
    states_[s].chars = chars;
    return {s, {{s, false}}};
  }
  Fragment Empty() {
    const int s = Add(Op::kJump);
    return {s, {{s, false}}};
  }

  Status Malformed(const std::string& what) const {
    return InvalidArgumentError("'" + p_ + "': " + what + " at character " + std::to_string(pos_ + 1));
  }
  Status Unsupported(const std::string& what) const {
    return UnimplementedError("'" + p_ + "': " + what + " at character " + std::to_string(pos_ + 1) +
                              " is not read by dtm (literals, escapes, '.', classes, groups, '|', '*', '+', '?', "
                              "'^' and '$' are)");
  }

  StatusOr<Fragment> Alternation() {
    ASSIGN_OR_RETURN(Fragment left, Concatenation());
    while (pos_ < p_.size() && p_[pos_] == '|') {
      ++pos_;
      ASSIGN_OR_RETURN(Fragment right, Concatenation());
      const int split = Add(Op::kSplit);
      states_[split].next = left.start;
      states_[split].alt = right.start;
      left.exits.insert(left.exits.end(), right.exits.begin(), right.exits.end());
      left.start = split;
    }
    return left;
  }

  StatusOr<Fragment> Concatenation() {
    Fragment whole = Empty();
    while (pos_ < p_.size() && p_[pos_] != '|' && p_[pos_] != ')') {
      ASSIGN_OR_RETURN(Fragment next, Repetition());
      Patch(whole, next.start);
      whole.exits = std::move(next.exits);
    }
    return whole;
  }

  StatusOr<Fragment> Repetition() {
    ASSIGN_OR_RETURN(Fragment atom, Atom());
    while (pos_ < p_.size() && (p_[pos_] == '*' || p_[pos_] == '+' || p_[pos_] == '?')) {
      const char q = p_[pos_++];
      if (pos_ < p_.size() && p_[pos_] == '?') ++pos_;  // lazy: the same language
      const int split = Add(Op::kSplit);
      states_[split].next = atom.start;
      if (q == '*') {  // split -> atom -> split; out by alt
        Patch(atom, split);
        atom = {split, {{split, true}}};
      } else if (q == '+') {  // atom -> split -> atom; out by alt
        Patch(atom, split);
        atom.exits = {{split, true}};
      } else {  // split -> atom or past it
        atom.exits.push_back({split, true});
        atom.start = split;
      }
    }
    if (pos_ < p_.size() && p_[pos_] == '{') return Unsupported("counted repetition '{'");
    return atom;
  }

  StatusOr<Fragment> Atom() {
    const char c = p_[pos_];
    switch (c) {
      case '(': {
        ++pos_;
        if (pos_ < p_.size() && p_[pos_] == '?') {
          if (pos_ + 1 < p_.size() && p_[pos_ + 1] == ':') {
            pos_ += 2;
          } else {
            return Unsupported("a '(?' group other than '(?:'");
          }
        }
        ASSIGN_OR_RETURN(Fragment inner, Alternation());
        if (pos_ >= p_.size() || p_[pos_] != ')') return Malformed("missing ')'");
        ++pos_;
        return inner;
      }
      case '[': return Class();
      case '.': {
        ++pos_;
        std::bitset<256> any;
        any.set();
        any.reset('\n');
        return Consume(any);
      }
      case '$': {
        ++pos_;
        const int s = Add(Op::kEnd);
        return Fragment{s, {{s, false}}};
      }
      case '\\': {
        ++pos_;
        ASSIGN_OR_RETURN(std::bitset<256> chars, Escape());
        return Consume(chars);
      }
      case '*':
      case '+':
      case '?': return Malformed("nothing to repeat");
      case '{': return Unsupported("counted repetition '{'");
      case '^': return Unsupported("'^' after the start");
      default: {
        ++pos_;
        std::bitset<256> one;
        one.set(static_cast<unsigned char>(c));
        return Consume(one);
      }
    }
  }

  // After a backslash: one byte class.
  StatusOr<std::bitset<256>> Escape() {
    if (pos_ >= p_.size()) return Malformed("a trailing '\\'");
    const char e = p_[pos_++];
    std::bitset<256> set;
    auto range = [&set](char lo, char hi) {
      for (int ch = lo; ch <= hi; ++ch) set.set(ch);
    };
    switch (e) {
      case 'd': case 'D': range('0', '9'); break;
      case 'w': case 'W': range('a', 'z'); range('A', 'Z'); range('0', '9'); set.set('_'); break;
      case 's': case 'S': for (char ch : std::string(" \t\n\r\f\v")) set.set(static_cast<unsigned char>(ch)); break;
      case 'n': set.set('\n'); return set;
      case 't': set.set('\t'); return set;
      default:
        // Escaped punctuation is itself; letters and digits are Python escapes dtm does not read
        // (\b, \A, \Z, backreferences ...).
        if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || (e >= '0' && e <= '9')) {
          --pos_;
          return Unsupported(std::string("the escape '\\") + e + "'");
        }
        set.set(static_cast<unsigned char>(e));
        return set;
    }
    if (e == 'D' || e == 'W' || e == 'S') set.flip();
    return set;
  }

  StatusOr<Fragment> Class() {
    ++pos_;  // '['
    bool negate = false;
    if (pos_ < p_.size() && p_[pos_] == '^') {
      negate = true;
      ++pos_;
    }
    std::bitset<256> set;
    bool first = true;
    while (pos_ < p_.size() && (p_[pos_] != ']' || first)) {
      first = false;
      std::bitset<256> item;
      int lo = -1;
      if (p_[pos_] == '\\') {
        ++pos_;
        ASSIGN_OR_RETURN(item, Escape());
        if (item.count() == 1) {
          for (int ch = 0; ch < 256; ++ch) lo = item.test(ch) ? ch : lo;
        }
      } else {
        lo = static_cast<unsigned char>(p_[pos_++]);
        item.set(lo);
      }
      // A range a-z (a '-' first or last is itself).
      if (lo >= 0 && pos_ + 1 < p_.size() && p_[pos_] == '-' && p_[pos_ + 1] != ']') {
        ++pos_;
        int hi = -1;
        if (p_[pos_] == '\\') {
          ++pos_;
          ASSIGN_OR_RETURN(std::bitset<256> end, Escape());
          for (int ch = 0; ch < 256 && end.count() == 1; ++ch) hi = end.test(ch) ? ch : hi;
          if (hi < 0) return Malformed("a class escape as a range's end");
        } else {
          hi = static_cast<unsigned char>(p_[pos_++]);
        }
        if (hi < lo) return Malformed("a range whose end is below its start");
        for (int ch = lo; ch <= hi; ++ch) item.set(ch);
      }
      set |= item;
    }
    if (pos_ >= p_.size()) return Malformed("missing ']'");
    ++pos_;  // ']'
    if (negate) set.flip();
    return Consume(set);
  }

  const std::string& p_;
  std::vector<State>& states_;
  size_t pos_ = 0;
};

StatusOr<ModulePattern> ModulePattern::Compile(const std::string& pattern) {
  if (pattern.size() > kMaxPatternLength) {
    return InvalidArgumentError("a pattern of " + std::to_string(pattern.size()) + " characters; at most " +
                                std::to_string(kMaxPatternLength) + " are read");
  }
  ModulePattern compiled;
  Parser parser(pattern, compiled.states_);
  ASSIGN_OR_RETURN(compiled.start_, parser.Compile());
  return compiled;
}

void ModulePattern::AddState(int s, bool at_end, std::vector<int>& set, std::vector<char>& on) const {
  if (s < 0 || on[s]) return;
  on[s] = 1;
  const State& state = states_[s];
  switch (state.op) {
    case Op::kSplit:
      AddState(state.next, at_end, set, on);
      AddState(state.alt, at_end, set, on);
      return;
    case Op::kJump: AddState(state.next, at_end, set, on); return;
    case Op::kEnd:
      if (at_end) AddState(state.next, at_end, set, on);
      return;
    default: set.push_back(s);
  }
}

bool ModulePattern::Matches(const std::string& name) const {
  std::vector<int> current, next;
  std::vector<char> on(states_.size(), 0);
  AddState(start_, name.empty(), current, on);
  for (size_t i = 0;; ++i) {
    for (int s : current) {
      if (states_[s].op == Op::kMatch) return true;  // re.match: a prefix is enough
    }
    if (i == name.size() || current.empty()) return false;
    next.clear();
    std::fill(on.begin(), on.end(), 0);
    const unsigned char c = static_cast<unsigned char>(name[i]);
    for (int s : current) {
      if (states_[s].op == Op::kChar && states_[s].chars.test(c)) {
        AddState(states_[s].next, i + 1 == name.size(), next, on);
      }
    }
    std::swap(current, next);
  }
}

}  // namespace dtm
