// InMemoryStore: the Store for `dtmctl local` and for unit tests; nothing outlives the process.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/status.h"
#include "common/store.h"

namespace dtm {

// Holds every key in one ordered map, with Redis's type rules (see store.h), so that code tested
// against it behaves the same against Redis.
//
// Thread-safety: thread-safe; one mutex guards the map, held for the length of one operation.
class InMemoryStore : public Store {
 public:
  InMemoryStore() = default;
  InMemoryStore(const InMemoryStore&) = delete;
  InMemoryStore& operator=(const InMemoryStore&) = delete;

  StatusOr<std::optional<std::string>> Get(const std::string& key) override;
  Status Set(const std::string& key, const std::string& value) override;
  StatusOr<bool> SetIfAbsent(const std::string& key, const std::string& value) override;
  Status Delete(const std::string& key) override;
  StatusOr<std::vector<bool>> Exist(const std::vector<std::string>& keys) override;
  Status HashSet(const std::string& key, const std::string& field, const std::string& value) override;
  StatusOr<std::map<std::string, std::string>> HashGetAll(const std::string& key) override;
  Status HashDelete(const std::string& key, const std::string& field) override;
  Status ListPush(const std::string& key, const std::string& value) override;
  StatusOr<std::vector<std::string>> ListRange(const std::string& key) override;
  Status ListTrimFront(const std::string& key, size_t count) override;
  StatusOr<std::vector<std::string>> Keys(const std::string& prefix) override;
  Status Ping() override;

 private:
  using Hash = std::map<std::string, std::string>;
  using List = std::vector<std::string>;
  using Value = std::variant<std::string, Hash, List>;

  // The value of type T at `key`: nullptr when the key is absent, FAILED_PRECONDITION when it holds
  // another type. Requires mu_.
  template <typename T>
  StatusOr<T*> Find(const std::string& key);

  std::mutex mu_;
  std::map<std::string, Value> entries_;  // guarded by mu_
};

}  // namespace dtm
