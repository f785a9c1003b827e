// Store: the key-value interface behind the coordinator's cache and durable job state.
//
// Two implementations: RedisStore (the cluster: state survives a coordinator restart) and
// InMemoryStore (`dtmctl local` and unit tests). Its operations are the subset of Redis that the
// coordinator needs, with Redis's semantics, so that the same typed tests run against both:
//   - a key holds one of three types: a string, a hash or a list; an operation of one type on a key
//     holding another fails with FAILED_PRECONDITION (Redis's WRONGTYPE), except Set, which
//     replaces whatever the key held, and Delete, which removes any type;
//   - a hash without fields and a list without elements do not exist;
//   - keys, fields and values are binary-safe: any bytes, NUL included.
// Deletes are idempotent (deleting what is absent is OK), so a caller can retry them after an
// UNAVAILABLE without learning anything new. Errors: UNAVAILABLE when the backend cannot be reached
// (the caller may retry later; nothing is lost that was acknowledged), FAILED_PRECONDITION for a
// wrong type, other codes for a backend error reply, with its message.
//
// Thread-safety: every implementation is safe to call from several threads at once.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace dtm {

class Store {
 public:
  virtual ~Store() = default;

  // The string at `key`, or nullopt when the key does not exist.
  virtual StatusOr<std::optional<std::string>> Get(const std::string& key) = 0;

  // Sets `key` to the string `value`, replacing whatever it held (of any type).
  virtual Status Set(const std::string& key, const std::string& value) = 0;

  // Sets `key` to `value` only if the key does not exist (SETNX): true when this call set it, false
  // when the key already existed and was left unchanged. This is how a result is accepted once:
  // of several workers completing the same task, the first one's value stays.
  virtual StatusOr<bool> SetIfAbsent(const std::string& key, const std::string& value) = 0;

  // Removes `key`, whatever its type; OK when it did not exist.
  virtual Status Delete(const std::string& key) = 0;

  // For each key, whether it exists (any type), in order. One round trip per thousand keys on
  // Redis (pipelined EXISTS), so that planning a stage of 100,000 tasks reads the cache in about a
  // second instead of a hundred thousand round trips.
  virtual StatusOr<std::vector<bool>> Exist(const std::vector<std::string>& keys) = 0;

  // Sets `field` of the hash at `key` to `value`, creating the hash when absent (HSET).
  virtual Status HashSet(const std::string& key, const std::string& field, const std::string& value) = 0;

  // Every field of the hash at `key` with its value; empty when the key does not exist (HGETALL).
  virtual StatusOr<std::map<std::string, std::string>> HashGetAll(const std::string& key) = 0;

  // Removes `field` from the hash at `key`; OK when either is absent (HDEL). Removing the last
  // field removes the key.
  virtual Status HashDelete(const std::string& key, const std::string& field) = 0;

  // Appends `value` to the list at `key`, creating the list when absent (RPUSH).
  virtual Status ListPush(const std::string& key, const std::string& value) = 0;

  // Every element of the list at `key`, first pushed first; empty when absent (LRANGE 0 -1).
  virtual StatusOr<std::vector<std::string>> ListRange(const std::string& key) = 0;

  // Removes the first `count` elements of the list at `key` (LTRIM key count -1): elements pushed
  // after a ListRange that read `count` of them stay. Removing the last element removes the key;
  // OK when the key is absent.
  virtual Status ListTrimFront(const std::string& key, size_t count) = 0;

  // Every key that starts with `prefix` (any type), sorted, each once. Redis walks its keyspace with
  // SCAN (never KEYS, which blocks the server), so a key added or removed during the walk may or may
  // not be listed; every key present for the whole walk is.
  virtual StatusOr<std::vector<std::string>> Keys(const std::string& prefix) = 0;

  // OK when the backend answers.
  virtual Status Ping() = 0;
};

}  // namespace dtm
