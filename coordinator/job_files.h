// JobFiles: how the coordinator reads the files a job spec names (the probe file, the calibration
// file, the ppl text, a sparsify round's previous results, a model's config.json). Anyone allowed to submit jobs names these
// paths, so each is read only if it is a regular file under the data root, at most max_file_bytes of
// it, and no error quotes its content.
//
// Thread-safety: thread-safe (immutable after Create).
#pragma once

#include <optional>
#include <string>

#include "common/calibration_set.h"
#include "common/data_root.h"
#include "common/jsonl.h"
#include "common/probe_file.h"
#include "common/status.h"
#include "coordinator/job_spec.h"
#include "coordinator/model_geometry.h"

namespace dtm {

// A ppl text travels in one task (TextWindowsInput.text) and its windows come back in one reply, at
// most 3 bytes a token: 4 MiB keeps both within a gRPC message (kMaxMessageBytes, 16 MiB).
inline constexpr uint64_t kMaxPplTextBytes = 4 << 20;

class JobFiles {
 public:
  // INVALID_ARGUMENT / NOT_FOUND naming the data root when it is not a folder.
  static StatusOr<JobFiles> Create(const std::string& data_root, uint64_t max_file_bytes,
                                   bool read_model_configs);

  // Replaces spec->probes, spec->calibration, spec->ppl_text and spec->previous (when set) by their canonical paths
  // under the data root. INVALID_ARGUMENT naming the field when one is missing or outside the root.
  // A train spec: its data (which must exist), and its output and checkpoint folders (which may not
  // exist yet: their parent folders must, under the root); checkpoint_dir defaults to
  // OUTPUT.checkpoints.
  Status ResolvePaths(JobSpec* spec) const;

  // OK when a train spec's (resolved) output folder does not exist or is empty: where a new model
  // may go. FAILED_PRECONDITION naming train.output otherwise.
  Status CheckOutputIsFree(const JobSpec& spec) const;

  // The probes of a spec whose paths are resolved: the first num_probes (all when 0), each cut to
  // its first prefix_len tokens. INVALID_ARGUMENT naming the field (probes, num_probes, prefix)
  // and the probe.
  StatusOr<ProbeSet> LoadProbes(const JobSpec& spec) const;

  // The calibration set of a spec whose paths are resolved and that names one (CutCalibrationSet:
  // INVALID_ARGUMENT naming the file and the row).
  StatusOr<CalibrationSequences> LoadCalibration(const JobSpec& spec) const;

  // The bytes of a spec's `ppl.text` (gunzipped when it ends in .gz), at most kMaxPplTextBytes of
  // them (INVALID_ARGUMENT naming ppl.text otherwise): they travel in one text-windows task.
  StatusOr<std::string> LoadPplText(const JobSpec& spec) const;

  // The layer count and component sizes from MODEL/config.json, when configs may be read and it
  // lies under the data root; nullopt otherwise.
  std::optional<ModelGeometry> ModelConfigGeometry(const std::string& model_path) const;

  // How every file named by a spec is read.
  const ReadLimits& limits() const { return limits_; }
  const std::string& root() const { return root_.path(); }

 private:
  JobFiles(DataRoot root, ReadLimits limits, bool read_model_configs)
      : root_(std::move(root)), limits_(limits), read_model_configs_(read_model_configs) {}

  DataRoot root_;
  ReadLimits limits_;
  bool read_model_configs_;
};

}  // namespace dtm
