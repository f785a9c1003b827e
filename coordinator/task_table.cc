#include "coordinator/task_table.h"

#include "common/shard_tag.h"

#include <spdlog/spdlog.h>

#include <cstdlib>

namespace dtm {

const TaskEntry* TaskTable::Find(const std::string& task_id) const {
  auto it = tasks_.find(task_id);
  return it == tasks_.end() ? nullptr : &it->second;
}

bool TaskTable::Join(const std::string& task_id, const std::string& job_id) {
  auto it = tasks_.find(task_id);
  if (it == tasks_.end()) return false;
  it->second.jobs.insert(job_id);
  return true;
}

bool TaskTable::RecentlyDone(const std::string& task_id, const std::string& pool) const {
  auto it = pools_.find(pool);
  return it != pools_.end() && it->second->IsDone(task_id);
}

Status TaskTable::Add(const PlannedTask& task, const std::string& pool, const std::string& model_path,
                      int priority, const std::string& job_id) {
  Status enqueued = task.train ? gangs_.Enqueue(task.task_id, pool, static_cast<int>(task.train->gang_size()))
                               : Pool(pool).Enqueue(task.task_id, priority);
  if (!enqueued.ok() && enqueued.code() != StatusCode::kAlreadyExists) return enqueued;
  TaskEntry& entry = tasks_[task.task_id];
  entry.kind = task.kind;
  entry.pool = pool;
  entry.model_path = model_path;
  entry.key = task.key;
  entry.rows = task.rows ? task.rows : std::make_shared<const Rows>();
  entry.text = task.text;
  entry.train = task.train;
  if (entry.jobs.empty()) entry.parent_config = task.parent_config;
  entry.shard_tag = task.kind == TaskKindForKey::kEval ? ShardTag(task.key) : "";
  entry.jobs.insert(job_id);
  return OkStatus();
}

GangTable::Options TaskTable::GangOptionsOf(const LeaseTable::Options& lease) {
  GangTable::Options options;
  options.lease_timeout_ms = lease.lease_timeout_ms;
  options.max_attempts = lease.max_attempts;
  options.lease_id_prefix = lease.lease_id_prefix + "gang-";
  // A candidate asks again every idle poll (well under a lease timeout) while it waits.
  options.candidate_ttl_ms = lease.lease_timeout_ms;
  return options;
}

LeaseTable& TaskTable::Pool(const std::string& pool) {
  auto it = pools_.find(pool);
  if (it != pools_.end()) return *it->second;
  LeaseTable::Options options = lease_options_;
  options.lease_id_prefix += std::to_string(pools_created_++) + "-";
  auto table = LeaseTable::Create(options, clock_);
  // The options were validated when the coordinator was created; a failure here is a bug.
  if (!table.ok()) {
    spdlog::critical("lease table: {}", table.status().message());
    std::abort();
  }
  return *(pools_[pool] = std::move(table).value());
}

std::set<std::string> TaskTable::Finish(const std::string& task_id) {
  auto it = tasks_.find(task_id);
  if (it == tasks_.end()) return {};
  std::set<std::string> jobs = std::move(it->second.jobs);
  if (it->second.train) gangs_.Forget(task_id);
  tasks_.erase(it);
  return jobs;
}

void TaskTable::Release(const std::string& job_id, const std::set<std::string>& task_ids) {
  for (const std::string& task_id : task_ids) {
    auto it = tasks_.find(task_id);
    if (it == tasks_.end()) continue;
    it->second.jobs.erase(job_id);
    if (!it->second.jobs.empty()) continue;
    if (it->second.train) {
      (void)gangs_.Cancel(task_id);
    } else {
      (void)Pool(it->second.pool).Cancel(task_id);
    }
    tasks_.erase(it);
  }
}

TaskTable::Sweep TaskTable::Expire() {
  Sweep sweep;
  for (auto& [pool, table] : pools_) {
    for (std::string& id : table->ExpireLeases()) sweep.requeued.push_back(std::move(id));
    for (std::string& id : table->TakeFailedTasks()) sweep.failed.push_back(std::move(id));
  }
  for (std::string& id : gangs_.Expire()) sweep.requeued.push_back(std::move(id));
  sweep.gangs_failed = gangs_.TakeFailed();
  return sweep;
}

std::vector<std::pair<std::string, ExcludedTask>> TaskTable::Excluded() const {
  std::vector<std::pair<std::string, ExcludedTask>> out;
  for (const auto& [pool, table] : pools_) {
    for (ExcludedTask& task : table->QueuedWithExclusions()) out.emplace_back(pool, std::move(task));
  }
  return out;
}

void TaskTable::ForgetDone(const std::vector<std::string>& task_ids) {
  for (auto& [pool, table] : pools_) {
    for (const std::string& id : task_ids) table->ForgetFinished(id);
  }
}

std::pair<int64_t, int64_t> TaskTable::QueuedAndLeased() const {
  int64_t queued = 0, leased = 0;
  for (const auto& [pool, table] : pools_) {
    LeaseTableStats stats = table->Stats();
    queued += stats.queued;
    leased += stats.leased;
  }
  const auto [waiting, running] = gangs_.WaitingAndRunning();
  return {queued + waiting, leased + running};
}

}  // namespace dtm
