// Clock: the time source behind leases, so that expiry is tested by advancing a fake clock instead of
// sleeping.
#pragma once

#include <chrono>
#include <mutex>

namespace dtm {

// Thread-safety: implementations must be safe to call from any thread.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::chrono::steady_clock::time_point Now() const = 0;
};

// Steady, not system time: a wall-clock jump (NTP, a VM resumed) must not expire every lease at once.
class SystemClock : public Clock {
 public:
  std::chrono::steady_clock::time_point Now() const override { return std::chrono::steady_clock::now(); }
};

// A clock that moves only when a test advances it.
//
// Thread-safety: thread-safe; a mutex guards the current time, because concurrency tests advance it
// while other threads read it.
class FakeClock : public Clock {
 public:
  // Starts at an arbitrary non-zero point so that no code can rely on time_point{} meaning "unset".
  FakeClock() : now_(std::chrono::steady_clock::time_point{} + std::chrono::hours(1)) {}

  std::chrono::steady_clock::time_point Now() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return now_;
  }

  void Advance(std::chrono::steady_clock::duration d) {
    std::lock_guard<std::mutex> lock(mu_);
    now_ += d;
  }

 private:
  mutable std::mutex mu_;
  std::chrono::steady_clock::time_point now_;  // guarded by mu_
};

}  // namespace dtm
