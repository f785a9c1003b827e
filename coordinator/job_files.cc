#include "coordinator/job_files.h"

#include <filesystem>

namespace dtm {

StatusOr<JobFiles> JobFiles::Create(const std::string& data_root, uint64_t max_file_bytes,
                                    bool read_model_configs) {
  ASSIGN_OR_RETURN(DataRoot root, DataRoot::Create(data_root));
  ReadLimits limits;
  limits.max_bytes = max_file_bytes;
  limits.regular_file_only = true;
  limits.quote_content = false;
  return JobFiles(std::move(root), limits, read_model_configs);
}

namespace {

// A folder a job will create: its parent must exist under the root; the folder itself is resolved
// when it exists (so a symlink cannot lead outside the root).
StatusOr<std::string> ResolveNew(const DataRoot& root, const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(fs::symlink_status(path, ec))) return root.Resolve(path);
  const fs::path normal = fs::path(path).lexically_normal();
  const fs::path name = normal.has_filename() ? normal.filename() : normal.parent_path().filename();
  if (name.empty() || name == "." || name == "..") return InvalidArgumentError("'" + path + "' names no folder");
  const fs::path parent = normal.has_filename() ? normal.parent_path() : normal.parent_path().parent_path();
  ASSIGN_OR_RETURN(std::string resolved, root.Resolve(parent.empty() ? "." : parent.string()));
  return (fs::path(resolved) / name).string();
}

Status ResolveTrainPaths(const DataRoot& root, TrainSpec* train) {
  StatusOr<std::string> data = root.Resolve(train->data);
  if (!data.ok()) return InvalidArgumentError("job spec: train.data: " + data.status().message());
  train->data = *data;
  StatusOr<std::string> output = ResolveNew(root, train->output);
  if (!output.ok()) return InvalidArgumentError("job spec: train.output: " + output.status().message());
  train->output = *output;
  StatusOr<std::string> checkpoints =
      ResolveNew(root, train->checkpoint_dir.empty() ? train->output + ".checkpoints" : train->checkpoint_dir);
  if (!checkpoints.ok()) return InvalidArgumentError("job spec: train.checkpoint_dir: " + checkpoints.status().message());
  train->checkpoint_dir = *checkpoints;
  if (train->checkpoint_dir == train->output) {
    return InvalidArgumentError("job spec: train.checkpoint_dir: must not be the output folder " + train->output);
  }
  return OkStatus();
}

}  // namespace

Status JobFiles::CheckOutputIsFree(const JobSpec& spec) const {
  namespace fs = std::filesystem;
  std::error_code ec;
  const bool run = spec.kind == JobKind::kSparsify;
  const std::string& out = run ? spec.sparsify_output : spec.train.output;
  if (!fs::exists(fs::symlink_status(out, ec))) return OkStatus();
  if (fs::is_directory(out, ec) && fs::is_empty(out, ec) && !ec) return OkStatus();
  return FailedPreconditionError(std::string("job spec: ") + (run ? "sparsify.output: " : "train.output: ") + out +
                                 " exists and is not an empty folder; " +
                                 (run ? "the run's models go to a new one" : "the trained model goes to a new one"));
}

Status JobFiles::ResolvePaths(JobSpec* spec) const {
  if (spec->kind == JobKind::kTrain) return ResolveTrainPaths(root_, &spec->train);
  if (spec->kind == JobKind::kSparsify) {
    // Each round's train job resolves its own output and checkpoints under this folder.
    StatusOr<std::string> data = root_.Resolve(spec->train.data);
    if (!data.ok()) return InvalidArgumentError("job spec: train.data: " + data.status().message());
    spec->train.data = *data;
    StatusOr<std::string> output = ResolveNew(root_, spec->sparsify_output);
    if (!output.ok()) return InvalidArgumentError("job spec: sparsify.output: " + output.status().message());
    spec->sparsify_output = *output;
  }
  StatusOr<std::string> probes = root_.Resolve(spec->probes);
  if (!probes.ok()) return InvalidArgumentError("job spec: probes: " + probes.status().message());
  spec->probes = *probes;
  if (!spec->previous.empty()) {
    StatusOr<std::string> previous = root_.Resolve(spec->previous);
    if (!previous.ok()) {
      return InvalidArgumentError(std::string("job spec: ") +
                                  (spec->kind == JobKind::kSparsify ? "sparsify" : "sparsify-round") +
                                  ".previous: " + previous.status().message());
    }
    spec->previous = *previous;
  }
  if (!spec->calibration.empty()) {
    StatusOr<std::string> calibration = root_.Resolve(spec->calibration);
    if (!calibration.ok()) {
      return InvalidArgumentError("job spec: calibration.probes: " + calibration.status().message());
    }
    spec->calibration = *calibration;
  }
  if (!spec->ppl_text.empty()) {
    StatusOr<std::string> text = root_.Resolve(spec->ppl_text);
    if (!text.ok()) return InvalidArgumentError("job spec: ppl.text: " + text.status().message());
    spec->ppl_text = *text;
  }
  return OkStatus();
}

StatusOr<std::string> JobFiles::LoadPplText(const JobSpec& spec) const {
  ReadLimits limits = limits_;
  // (max_bytes 0 means no limit.)
  if (limits.max_bytes == 0 || limits.max_bytes > kMaxPplTextBytes) limits.max_bytes = kMaxPplTextBytes;
  StatusOr<std::string> text = ReadTextFile(spec.ppl_text, limits);
  if (!text.ok()) return InvalidArgumentError("ppl.text: " + text.status().message());
  return text;
}

StatusOr<CalibrationSequences> JobFiles::LoadCalibration(const JobSpec& spec) const {
  StatusOr<ProbeSet> file = ReadProbeFile(spec.calibration, limits_);
  if (!file.ok()) return InvalidArgumentError("calibration.probes: " + file.status().message());
  return CutCalibrationSet(std::move(file).value(), spec.calibration_count, spec.calibration_seq_len,
                           "calibration: " + spec.calibration);
}

StatusOr<ProbeSet> JobFiles::LoadProbes(const JobSpec& spec) const {
  StatusOr<ProbeSet> file = ReadProbeFile(spec.probes, limits_);
  if (!file.ok()) return InvalidArgumentError("probes: " + file.status().message());
  ProbeSet set = std::move(file).value();
  if (spec.num_probes > 0) {
    if (static_cast<int64_t>(set.probes.size()) < spec.num_probes) {
      return InvalidArgumentError("num_probes: " + std::to_string(spec.num_probes) + " asked for, but " +
                                  spec.probes + " holds " + std::to_string(set.probes.size()));
    }
    set.probes.resize(spec.num_probes);
  }
  for (size_t i = 0; i < set.probes.size(); ++i) {
    Probe& p = set.probes[i];
    if (static_cast<int64_t>(p.tokens.size()) < spec.prefix_len) {
      return InvalidArgumentError("prefix: " + std::to_string(spec.prefix_len) + " tokens is beyond probe #" +
                                  std::to_string(i + 1) + " of " + spec.probes + ", which has " +
                                  std::to_string(p.tokens.size()));
    }
    p.tokens.resize(spec.prefix_len);
  }
  return set;
}

std::optional<ModelGeometry> JobFiles::ModelConfigGeometry(const std::string& model_path) const {
  if (!read_model_configs_) return std::nullopt;
  // The check resolves MODEL/config.json itself, so a config.json that links out of the root is not read.
  if (!root_.Contains((std::filesystem::path(model_path) / "config.json").string())) return std::nullopt;
  return ReadModelGeometry(model_path, limits_);
}

}  // namespace dtm
