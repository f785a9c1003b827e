#include "common/in_memory_store.h"

#include <algorithm>

#include <utility>

namespace dtm {

namespace {

template <typename T>
const char* TypeName();
template <>
const char* TypeName<std::string>() {
  return "string";
}
template <>
const char* TypeName<std::map<std::string, std::string>>() {
  return "hash";
}
template <>
const char* TypeName<std::vector<std::string>>() {
  return "list";
}

}  // namespace

template <typename T>
StatusOr<T*> InMemoryStore::Find(const std::string& key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return static_cast<T*>(nullptr);
  T* value = std::get_if<T>(&it->second);
  if (value == nullptr) {
    // Same condition as Redis's WRONGTYPE reply.
    return FailedPreconditionError("key '" + key + "' does not hold a " + TypeName<T>());
  }
  return value;
}

StatusOr<std::optional<std::string>> InMemoryStore::Get(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(std::string * value, Find<std::string>(key));
  if (value == nullptr) return std::optional<std::string>();
  return std::optional<std::string>(*value);
}

Status InMemoryStore::Set(const std::string& key, const std::string& value) {
  std::lock_guard<std::mutex> lock(mu_);
  entries_[key] = value;
  return OkStatus();
}

StatusOr<bool> InMemoryStore::SetIfAbsent(const std::string& key, const std::string& value) {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.emplace(key, value).second;
}

Status InMemoryStore::Delete(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  entries_.erase(key);
  return OkStatus();
}

StatusOr<std::vector<bool>> InMemoryStore::Exist(const std::vector<std::string>& keys) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<bool> exist;
  exist.reserve(keys.size());
  for (const std::string& key : keys) exist.push_back(entries_.count(key) != 0);
  return exist;
}

Status InMemoryStore::HashSet(const std::string& key, const std::string& field, const std::string& value) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Hash * hash, Find<Hash>(key));
  if (hash == nullptr) hash = &std::get<Hash>(entries_[key] = Hash());
  (*hash)[field] = value;
  return OkStatus();
}

StatusOr<std::map<std::string, std::string>> InMemoryStore::HashGetAll(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Hash * hash, Find<Hash>(key));
  return hash == nullptr ? Hash() : *hash;
}

Status InMemoryStore::HashDelete(const std::string& key, const std::string& field) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Hash * hash, Find<Hash>(key));
  if (hash == nullptr) return OkStatus();
  hash->erase(field);
  if (hash->empty()) entries_.erase(key);  // as Redis: an empty hash does not exist
  return OkStatus();
}

Status InMemoryStore::ListPush(const std::string& key, const std::string& value) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(List * list, Find<List>(key));
  if (list == nullptr) list = &std::get<List>(entries_[key] = List());
  list->push_back(value);
  return OkStatus();
}

StatusOr<std::vector<std::string>> InMemoryStore::ListRange(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(List * list, Find<List>(key));
  return list == nullptr ? List() : *list;
}

Status InMemoryStore::ListTrimFront(const std::string& key, size_t count) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(List * list, Find<List>(key));
  if (list == nullptr) return OkStatus();
  list->erase(list->begin(), list->begin() + static_cast<std::ptrdiff_t>(std::min(count, list->size())));
  if (list->empty()) entries_.erase(key);
  return OkStatus();
}

StatusOr<std::vector<std::string>> InMemoryStore::Keys(const std::string& prefix) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> keys;
  // The map is ordered, so the keys with a prefix form one run starting at the prefix itself.
  for (auto it = entries_.lower_bound(prefix);
       it != entries_.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
    keys.push_back(it->first);
  }
  return keys;
}

Status InMemoryStore::Ping() { return OkStatus(); }

}  // namespace dtm
