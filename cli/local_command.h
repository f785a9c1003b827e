// `dtmctl local SPEC.yaml`: the embedded default. One process runs a coordinator (on an SQLite file
// in the XDG data folder unless --store names another store), K workers each holding a replica of
// the spec's model, and the client that submits the job, watches it and prints its results. The
// coordinator listens on a free loopback port and the workers and the client talk to it over gRPC,
// exactly as in a cluster. The store keeps jobs and results after the process ends: `dtmctl
// results --store URL` reads them, and a run of a spec whose job a killed run left unfinished
// resumes that job.
#pragma once

#include <cstdint>
#include <string>

#include "cli/service_commands.h"

namespace dtm::cli {

struct LocalOptions {
  std::string spec_path;
  int workers = 1;
  std::string store;               // --store URL; "" = DefaultLocalStoreUrl()
  std::string format = "table";    // results: table | json | csv
  std::string device = "cpu";
  std::string dtype;               // "" = the device's default
  int64_t batch_size = 8;
  int64_t activation_cache_bytes = -1;  // per worker; -1: a quarter of free memory, shared by the workers
  int activation_cache_every = 1;
  int threads = 0;                 // CPU threads of the whole process (0: libtorch's default)
  std::string metrics_listen;      // HOST:PORT for /metrics; "" = none
  std::string report;              // write the job's report here when it ends (ReportCommand); "" = none
  int64_t lease_timeout_ms = 60000;
};

int LocalCommand(const LocalOptions& options, const Console& console);

}  // namespace dtm::cli
