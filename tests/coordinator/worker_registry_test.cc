#include "coordinator/worker_registry.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/version.h"
#include "coordinator/clock.h"

namespace dtm {
namespace {

using std::chrono::seconds;

constexpr char kPathA[] = "/models/a";
constexpr char kPathB[] = "/models/b";

// A request that Validate accepts: `worker` serving `fingerprint` from `path` in float32, 2 layers.
v1::RegisterWorkerRequest Request(const std::string& worker, const std::string& fingerprint = "fp-a",
                                  const std::string& path = kPathA, v1::Dtype dtype = v1::DTYPE_F32) {
  v1::RegisterWorkerRequest request;
  request.set_worker_id(worker);
  request.set_model_fingerprint(fingerprint);
  request.set_model_path(path);
  request.set_dtype(dtype);
  request.set_num_layers(2);
  request.set_version(kDtmVersion);
  request.set_capacity(1);
  return request;
}

class WorkerRegistryTest : public ::testing::Test {
 protected:
  static void ExpectInvalid(const v1::RegisterWorkerRequest& request, const std::string& field) {
    Status status = WorkerRegistry::Validate(request);
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.ToString();
    EXPECT_NE(status.message().find(field), std::string::npos) << status.message();
  }

  WorkerRegistry::Registration Register(const v1::RegisterWorkerRequest& request) {
    EXPECT_TRUE(WorkerRegistry::Validate(request).ok()) << WorkerRegistry::Validate(request).ToString();
    return registry_.Register(request, clock_.Now());
  }

  FakeClock clock_;
  WorkerRegistry registry_;
};

// ---------------------------------------------------------------------------------------------
// Validate

TEST_F(WorkerRegistryTest, ValidateAcceptsACompleteRequest) {
  EXPECT_TRUE(WorkerRegistry::Validate(Request("w1")).ok());
  // model_path and component_params are optional (older workers send neither).
  v1::RegisterWorkerRequest request = Request("w1");
  request.clear_model_path();
  EXPECT_TRUE(WorkerRegistry::Validate(request).ok());
}

TEST_F(WorkerRegistryTest, ValidateRefusesAMissingOrOverlongWorkerId) {
  ExpectInvalid(Request(""), "worker_id");
  ExpectInvalid(Request(std::string(257, 'w')), "worker_id");
  EXPECT_TRUE(WorkerRegistry::Validate(Request(std::string(256, 'w'))).ok());
}

TEST_F(WorkerRegistryTest, ValidateRefusesAMissingOrOverlongFingerprint) {
  ExpectInvalid(Request("w1", ""), "model_fingerprint");
  ExpectInvalid(Request("w1", std::string(257, 'f')), "model_fingerprint");
  EXPECT_TRUE(WorkerRegistry::Validate(Request("w1", std::string(256, 'f'))).ok());
}

TEST_F(WorkerRegistryTest, ValidateRefusesAnOverlongModelPath) {
  ExpectInvalid(Request("w1", "fp-a", "/" + std::string(4096, 'p')), "model_path");
  EXPECT_TRUE(WorkerRegistry::Validate(Request("w1", "fp-a", "/" + std::string(4095, 'p'))).ok());
}

TEST_F(WorkerRegistryTest, ValidateRefusesAnUnspecifiedOrUnknownDtype) {
  ExpectInvalid(Request("w1", "fp-a", kPathA, v1::DTYPE_UNSPECIFIED), "dtype");
  ExpectInvalid(Request("w1", "fp-a", kPathA, static_cast<v1::Dtype>(99)), "dtype");
}

TEST_F(WorkerRegistryTest, ValidateRefusesALayerCountOutsideItsRange) {
  v1::RegisterWorkerRequest request = Request("w1");
  request.set_num_layers(0);
  ExpectInvalid(request, "num_layers");
  request.set_num_layers(4097);
  ExpectInvalid(request, "num_layers");
  request.set_num_layers(4096);
  EXPECT_TRUE(WorkerRegistry::Validate(request).ok());
}

TEST_F(WorkerRegistryTest, ValidateRefusesMoreComponentSizesThanTheLayersHave) {
  v1::RegisterWorkerRequest request = Request("w1");
  request.set_num_layers(1);
  for (int i = 0; i < 7; ++i) (*request.mutable_component_params())["component." + std::to_string(i)] = 10;
  EXPECT_TRUE(WorkerRegistry::Validate(request).ok());
  (*request.mutable_component_params())["component.7"] = 10;
  ExpectInvalid(request, "component_params");
}

TEST_F(WorkerRegistryTest, ValidateRefusesAnIncompatibleVersionWithFailedPrecondition) {
  for (const std::string& version : {std::string(""), std::string("99.0.0"), std::string("garbage")}) {
    v1::RegisterWorkerRequest request = Request("worker-7");
    request.set_version(version);
    Status status = WorkerRegistry::Validate(request);
    EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition) << status.ToString();
    EXPECT_NE(status.message().find("'worker-7'"), std::string::npos) << status.message();
    EXPECT_NE(status.message().find("'" + version + "'"), std::string::npos) << status.message();
    EXPECT_NE(status.message().find(kDtmVersion), std::string::npos) << status.message();
  }
  // A huge version string is quoted bounded.
  v1::RegisterWorkerRequest request = Request("w1");
  request.set_version(std::string(100000, '9'));
  Status status = WorkerRegistry::Validate(request);
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition);
  EXPECT_LT(status.message().size(), 1000u);
}

// ---------------------------------------------------------------------------------------------
// Register, Touch, Find, Remove

TEST_F(WorkerRegistryTest, RegisterPutsAWorkerInThePoolOfItsFingerprintAndDtype) {
  WorkerRegistry::Registration first = Register(Request("w1", "fp-a", "/models/a/"));
  EXPECT_FALSE(first.replaced);
  EXPECT_TRUE(first.model_changed);
  EXPECT_EQ(first.model_path, kPathA);

  const WorkerRegistry::Worker* w1 = registry_.Find("w1");
  ASSERT_NE(w1, nullptr);
  EXPECT_EQ(w1->pool, PoolName("fp-a", v1::DTYPE_F32));
  EXPECT_EQ(w1->model_path, kPathA);
  EXPECT_EQ(w1->dtype, v1::DTYPE_F32);
  EXPECT_EQ(w1->last_seen, clock_.Now());

  Register(Request("w2", "fp-a"));
  Register(Request("w3", "fp-a", kPathA, v1::DTYPE_BF16));
  Register(Request("w4", "fp-b", kPathB));
  EXPECT_EQ(registry_.size(), 4u);
  EXPECT_EQ(registry_.WorkersOf(PoolName("fp-a", v1::DTYPE_F32)), (std::set<std::string>{"w1", "w2"}));
  EXPECT_EQ(registry_.WorkersOf(PoolName("fp-a", v1::DTYPE_BF16)), std::set<std::string>{"w3"});
  EXPECT_EQ(registry_.WorkersOf(PoolName("fp-b", v1::DTYPE_F32)), std::set<std::string>{"w4"});
  EXPECT_TRUE(registry_.WorkersOf(PoolName("fp-c", v1::DTYPE_F32)).empty());
}

TEST_F(WorkerRegistryTest, PoolsDifferByFingerprintAndByDtype) {
  EXPECT_NE(PoolName("fp-a", v1::DTYPE_F32), PoolName("fp-b", v1::DTYPE_F32));
  EXPECT_NE(PoolName("fp-a", v1::DTYPE_F32), PoolName("fp-a", v1::DTYPE_BF16));
  EXPECT_EQ(PoolName("fp-a", v1::DTYPE_F16), PoolName("fp-a", v1::DTYPE_F16));
}

TEST_F(WorkerRegistryTest, ReRegistrationReportsTheEarlierPool) {
  Register(Request("w1", "fp-a"));
  clock_.Advance(seconds(5));
  WorkerRegistry::Registration again = Register(Request("w1", "fp-b", kPathB, v1::DTYPE_F16));
  EXPECT_TRUE(again.replaced);
  EXPECT_EQ(again.previous_pool, PoolName("fp-a", v1::DTYPE_F32));
  EXPECT_EQ(registry_.size(), 1u);
  const WorkerRegistry::Worker* w1 = registry_.Find("w1");
  ASSERT_NE(w1, nullptr);
  EXPECT_EQ(w1->pool, PoolName("fp-b", v1::DTYPE_F16));
  EXPECT_EQ(w1->model_path, kPathB);
  EXPECT_EQ(w1->last_seen, clock_.Now());
  EXPECT_TRUE(registry_.WorkersOf(PoolName("fp-a", v1::DTYPE_F32)).empty());

  // A retried call: the same pool, still a replacement.
  WorkerRegistry::Registration retried = Register(Request("w1", "fp-b", kPathB, v1::DTYPE_F16));
  EXPECT_TRUE(retried.replaced);
  EXPECT_EQ(retried.previous_pool, PoolName("fp-b", v1::DTYPE_F16));
  EXPECT_FALSE(retried.model_changed);
}

TEST_F(WorkerRegistryTest, ModelChangesOnlyWhenFingerprintLayersOrSizesChange) {
  EXPECT_TRUE(Register(Request("w1")).model_changed);
  // Another worker of the same model, and the same worker again: nothing new.
  EXPECT_FALSE(Register(Request("w2")).model_changed);
  EXPECT_FALSE(Register(Request("w1")).model_changed);
  // The same model named by another spelling of its path.
  EXPECT_FALSE(Register(Request("w3", "fp-a", "/models/./b/../a//")).model_changed);

  v1::RegisterWorkerRequest layers = Request("w1");
  layers.set_num_layers(3);
  WorkerRegistry::Registration changed = Register(layers);
  EXPECT_TRUE(changed.model_changed);
  EXPECT_EQ(changed.model_path, kPathA);
  EXPECT_FALSE(Register(layers).model_changed);

  v1::RegisterWorkerRequest sizes = layers;
  (*sizes.mutable_component_params())["model.layers.0.mlp.up_proj"] = 4096;
  EXPECT_TRUE(Register(sizes).model_changed);
  EXPECT_FALSE(Register(sizes).model_changed);
  (*sizes.mutable_component_params())["model.layers.0.mlp.up_proj"] = 4097;
  EXPECT_TRUE(Register(sizes).model_changed);

  v1::RegisterWorkerRequest fingerprint = sizes;
  fingerprint.set_model_fingerprint("fp-a-retrained");
  EXPECT_TRUE(Register(fingerprint).model_changed);

  // The same path in another dtype is another (path, dtype) entry.
  EXPECT_TRUE(Register(Request("w4", "fp-a", kPathA, v1::DTYPE_BF16)).model_changed);
  // Capacity and device are not the model's.
  v1::RegisterWorkerRequest capacity = fingerprint;
  capacity.set_capacity(8);
  EXPECT_FALSE(Register(capacity).model_changed);

  const ModelInfo* model = registry_.Model(kPathA, v1::DTYPE_F32);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->fingerprint, "fp-a-retrained");
  EXPECT_EQ(model->geometry.num_layers, 3);
  EXPECT_EQ(model->geometry.component_params,
            (std::map<std::string, uint64_t>{{"model.layers.0.mlp.up_proj", 4097}}));
}

TEST_F(WorkerRegistryTest, RegisterAfterLoadModelOfTheSameModelChangesNothing) {
  registry_.LoadModel(kPathA, v1::DTYPE_F32, ModelInfo{"fp-a", {2, {}}});
  EXPECT_FALSE(Register(Request("w1")).model_changed);
  registry_.LoadModel(kPathB, v1::DTYPE_F32, ModelInfo{"fp-old", {2, {}}});
  EXPECT_TRUE(Register(Request("w2", "fp-b", kPathB)).model_changed);
}

TEST_F(WorkerRegistryTest, TouchMarksAWorkerSeen) {
  Register(Request("w1"));
  clock_.Advance(seconds(3));
  WorkerRegistry::Worker* touched = registry_.Touch("w1", clock_.Now());
  ASSERT_NE(touched, nullptr);
  EXPECT_EQ(touched->last_seen, clock_.Now());
  EXPECT_EQ(registry_.Find("w1")->last_seen, clock_.Now());
  EXPECT_EQ(registry_.Touch("nobody", clock_.Now()), nullptr);
  EXPECT_EQ(registry_.size(), 1u);
}

TEST_F(WorkerRegistryTest, FindAndRemoveNameOneWorker) {
  Register(Request("w1"));
  Register(Request("w2"));
  EXPECT_EQ(registry_.Find("nobody"), nullptr);
  registry_.Remove("w1");
  EXPECT_EQ(registry_.Find("w1"), nullptr);
  EXPECT_NE(registry_.Find("w2"), nullptr);
  EXPECT_EQ(registry_.size(), 1u);
  registry_.Remove("w1");  // again: nothing to do
  EXPECT_EQ(registry_.size(), 1u);
  // The model it served stays known.
  EXPECT_NE(registry_.Model(kPathA, v1::DTYPE_F32), nullptr);
}

TEST_F(WorkerRegistryTest, RemoveSilentSinceRemovesOnlyWorkersNotSeenSinceTheCutoff) {
  Register(Request("early"));
  Register(Request("touched", "fp-b", kPathB));
  clock_.Advance(seconds(10));
  const auto cutoff = clock_.Now();
  registry_.Touch("touched", cutoff);
  Register(Request("late"));

  std::vector<std::pair<std::string, std::string>> removed = registry_.RemoveSilentSince(cutoff);
  EXPECT_EQ(removed,
            (std::vector<std::pair<std::string, std::string>>{{"early", PoolName("fp-a", v1::DTYPE_F32)}}));
  EXPECT_EQ(registry_.Find("early"), nullptr);
  EXPECT_NE(registry_.Find("touched"), nullptr);  // seen exactly at the cutoff
  EXPECT_NE(registry_.Find("late"), nullptr);
  EXPECT_TRUE(registry_.RemoveSilentSince(cutoff).empty());
}

// ---------------------------------------------------------------------------------------------
// Models

TEST_F(WorkerRegistryTest, FindModelWithADtypeFindsOnlyThatDtype) {
  Register(Request("w1", "fp-a", kPathA, v1::DTYPE_BF16));
  StatusOr<std::pair<ModelInfo, v1::Dtype>> found = registry_.FindModel(kPathA, v1::DTYPE_BF16);
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ(found->first.fingerprint, "fp-a");
  EXPECT_EQ(found->first.geometry.num_layers, 2);
  EXPECT_EQ(found->second, v1::DTYPE_BF16);

  StatusOr<std::pair<ModelInfo, v1::Dtype>> other = registry_.FindModel(kPathA, v1::DTYPE_F32);
  EXPECT_EQ(other.status().code(), StatusCode::kNotFound);
  EXPECT_NE(other.status().message().find(kPathA), std::string::npos) << other.status().message();
  EXPECT_NE(other.status().message().find(v1::Dtype_Name(v1::DTYPE_F32)), std::string::npos)
      << other.status().message();
}

TEST_F(WorkerRegistryTest, FindModelWithoutADtypeFindsAnyAndSaysWhich) {
  Register(Request("w1", "fp-a", kPathA, v1::DTYPE_F16));
  StatusOr<std::pair<ModelInfo, v1::Dtype>> found = registry_.FindModel(kPathA, v1::DTYPE_UNSPECIFIED);
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ(found->first.fingerprint, "fp-a");
  EXPECT_EQ(found->second, v1::DTYPE_F16);

  StatusOr<std::pair<ModelInfo, v1::Dtype>> missing = registry_.FindModel(kPathB, v1::DTYPE_UNSPECIFIED);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(kPathB), std::string::npos) << missing.status().message();
}

TEST_F(WorkerRegistryTest, FindModelFindsAModelLoadedFromTheStoreWithoutWorkers) {
  registry_.LoadModel(kPathB, v1::DTYPE_F32, ModelInfo{"fp-b", {4, {{"model.layers.0.mlp.up_proj", 12}}}});
  StatusOr<std::pair<ModelInfo, v1::Dtype>> found = registry_.FindModel(kPathB, v1::DTYPE_F32);
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ(found->first.fingerprint, "fp-b");
  EXPECT_EQ(found->first.geometry.num_layers, 4);
  EXPECT_EQ(registry_.Model(kPathB, v1::DTYPE_BF16), nullptr);
}

TEST_F(WorkerRegistryTest, ComponentParamsOfReturnsTheSizesSomeWorkerReported) {
  EXPECT_TRUE(registry_.ComponentParamsOf("fp-a").empty());
  Register(Request("w1", "fp-a", kPathA, v1::DTYPE_F32));  // an older worker: no sizes
  EXPECT_TRUE(registry_.ComponentParamsOf("fp-a").empty());
  v1::RegisterWorkerRequest sized = Request("w2", "fp-a", kPathA, v1::DTYPE_BF16);
  (*sized.mutable_component_params())["model.layers.0.self_attn.q_proj"] = 16384;
  (*sized.mutable_component_params())["model.layers.1.self_attn.q_proj"] = 16384;
  Register(sized);
  EXPECT_EQ(registry_.ComponentParamsOf("fp-a"),
            (std::map<std::string, uint64_t>{{"model.layers.0.self_attn.q_proj", 16384},
                                             {"model.layers.1.self_attn.q_proj", 16384}}));
  EXPECT_TRUE(registry_.ComponentParamsOf("fp-b").empty());
}

TEST_F(WorkerRegistryTest, ServedModelsListsEachPathOnceOrSaysNoWorkerIsConnected) {
  EXPECT_EQ(registry_.ServedModels(), "no worker is connected");
  Register(Request("w1", "fp-b", kPathB));
  EXPECT_EQ(registry_.ServedModels(), "workers serve /models/b");
  Register(Request("w2", "fp-a", kPathA));
  Register(Request("w3", "fp-a", kPathA, v1::DTYPE_BF16));
  EXPECT_EQ(registry_.ServedModels(), "workers serve /models/a, /models/b");
  registry_.Remove("w1");
  registry_.Remove("w2");
  registry_.Remove("w3");
  // Known models that nobody serves now are not served.
  EXPECT_EQ(registry_.ServedModels(), "no worker is connected");
}

TEST_F(WorkerRegistryTest, NormalModelPathIsAbsoluteAndLexicallyNormal) {
  EXPECT_EQ(NormalModelPath("/models/a"), "/models/a");
  EXPECT_EQ(NormalModelPath("/models/a/"), "/models/a");
  EXPECT_EQ(NormalModelPath("/models/a///"), "/models/a");
  EXPECT_EQ(NormalModelPath("/models/./x/../a"), "/models/a");
  EXPECT_EQ(NormalModelPath("//models//a"), NormalModelPath("/models/a"));
  EXPECT_EQ(NormalModelPath("/"), "/");
  const std::string cwd = std::filesystem::current_path().lexically_normal().string();
  EXPECT_EQ(NormalModelPath("build/tiny-model/"), (std::filesystem::path(cwd) / "build/tiny-model").string());
  EXPECT_EQ(NormalModelPath("./build/../build/tiny-model"), NormalModelPath("build/tiny-model"));
}

}  // namespace
}  // namespace dtm
