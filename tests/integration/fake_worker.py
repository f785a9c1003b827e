"""A worker written with the Python gRPC stubs, for tests that need one that lies or misbehaves: it
registers with whatever it claims, leases, and reports results it makes up (a forged worker), reports
again after the coordinator restarted (a late report), or says it cannot run what it leased (a worker
that lacks a capability). It never runs a model."""
import uuid


class FakeWorker:
    def __init__(self, stubs, address, worker_id, fingerprint, model_path, token=None, version=None):
        self.stubs = stubs
        self.worker_id = worker_id
        self.fingerprint = fingerprint
        self.model_path = model_path
        self.version = version
        self.channel = stubs.grpc.insecure_channel(address)
        self.stub = stubs.worker_service_pb2_grpc.WorkerServiceStub(self.channel)
        self.metadata = [("authorization", f"Bearer {token}")] if token else None

    def close(self):
        self.channel.close()

    def _call(self, method, request):
        return getattr(self.stub, method)(request, timeout=10, metadata=self.metadata)

    def register(self, layers=4):
        pb = self.stubs.worker_service_pb2
        request = pb.RegisterWorkerRequest(worker_id=self.worker_id, model_fingerprint=self.fingerprint,
                                           model_path=self.model_path, dtype=self.stubs.common_pb2.DTYPE_F32,
                                           num_layers=layers, capacity=1, version=self.version or self.dtm_version())
        return self._call("RegisterWorker", request)

    def lease(self, max_tasks=8):
        pb = self.stubs.worker_service_pb2
        return self._call("LeaseTasks", pb.LeaseTasksRequest(worker_id=self.worker_id, max_tasks=max_tasks,
                                                             request_id=str(uuid.uuid4())))

    def forged_result(self, task, fdt=0):
        """A result that fits the task's shape and is made up: every probe diverging at `fdt`, and a
        baseline of zeros after each probe's prefix."""
        pb = self.stubs.worker_service_pb2
        request = pb.CompleteTaskRequest(worker_id=self.worker_id, lease_id=task.lease_id, task_id=task.task_id)
        request.eval.computed_by = "someone-else"  # the coordinator names the caller, whatever this says
        completion = task.key.completion_len
        if task.kind == pb.TASK_KIND_BASELINE_SHARD:
            request.ClearField("eval")
            for row in task.rows:
                out = request.baseline.rows.add()
                out.CopyFrom(row)
                out.tokens.extend([0] * completion)
        else:
            for row in task.rows:
                request.eval.results.add(probe_id=row.probe_id, probe_index=row.probe_index, fdt=fdt,
                                         sdt=completion - fdt, nll=10.0)
        return request

    def complete(self, request):
        return self._call("CompleteTask", request)

    def fail(self, task, message, cause=None):
        """Reports that this worker cannot run `task` (cause WORKER unless given)."""
        pb = self.stubs.worker_service_pb2
        request = pb.FailTaskRequest(worker_id=self.worker_id, lease_id=task.lease_id, task_id=task.task_id,
                                     cause=cause if cause is not None else pb.FAILURE_CAUSE_WORKER,
                                     retryable=True, request_id=str(uuid.uuid4()))
        request.error.code = 9  # FAILED_PRECONDITION: this worker lacks what the task needs
        request.error.message = message
        return self._call("FailTask", request)

    def heartbeat(self, lease_ids=()):
        pb = self.stubs.worker_service_pb2
        return self._call("Heartbeat", pb.HeartbeatRequest(worker_id=self.worker_id, lease_ids=list(lease_ids)))

    @staticmethod
    def dtm_version():
        # common/version.h, read from the source so that the test follows it.
        import os
        import re
        header = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "common", "version.h")
        with open(header) as f:
            return re.search(r'kDtmVersion\[\] = "([^"]+)"', f.read()).group(1)
