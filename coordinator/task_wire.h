// Conversions between the coordinator's task state and the worker API's messages (worker_service.
// proto): pure functions, no state and no I/O, so that what crosses the wire is tested on its own.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "coordinator/lease_table.h"
#include "coordinator/task_table.h"
#include "dtm/v1/worker_service.pb.h"

namespace dtm {

// The Task a worker receives for `grant` of `entry` on behalf of `job_id`: its key, its rows (copied),
// and the lease's expiry as wall-clock Unix milliseconds.
dtm::v1::Task ToWireTask(const TaskEntry& entry, const LeaseGrant& grant, const std::string& job_id,
                         int64_t lease_expire_unix_ms);

// The Task gang member `grant.rank` receives: the train task's settings with its rank, the gang's
// size and rendezvous, and `timeout_seconds` (the gang's collective timeout).
dtm::v1::Task ToWireGangTask(const TaskEntry& entry, const GangGrant& grant, const std::string& job_id,
                             int64_t lease_expire_unix_ms);

// About the bytes ToWireTask's message holds, for bounding a lease reply (a text-windows task
// carries up to 4 MiB of text).
uint64_t WireBytesEstimate(const TaskEntry& entry);

// Whether `request` is a result that fits `task`: the output kind matches; one row per probe of the
// shard, in order; baseline rows keep the probe's prefix and have prefix + completion tokens; eval
// results have fdt and sdt within the completion and a finite NLL (a forged result can still lie
// within these bounds: see GetResultsResponse.warnings); text windows are at least one, each of
// exactly the key's window length; a train result comes from a rank of the gang and, from rank 0,
// has a loss (finite) per step, the output folder of the task and its fingerprint. INVALID_ARGUMENT
// naming the first misfit.
Status ValidateTaskOutput(const TaskEntry& task, const dtm::v1::CompleteTaskRequest& request);

// The failure's cause; for a worker that predates FailTaskRequest.cause, its `retryable` flag.
FailCause FailCauseOf(const dtm::v1::FailTaskRequest& request);

dtm::v1::LeaseState ToWireLeaseState(HeartbeatResult result);

}  // namespace dtm
